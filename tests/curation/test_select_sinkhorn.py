"""The select stage's float32 torch Sinkhorn against POT's float64 solver."""

import warnings

import numpy as np
import pytest
import torch

import curation.select.sinkhorn as sinkhorn
from curation.select.got import calibrated_gradient, squared_distances
from curation.select.sinkhorn import sinkhorn_potentials, solve, solver_settings

# Calibrated gradients (GOT-D's scores) of the float32 solver within this of POT float64's;
# the scores themselves spread over ~0.2 (standard deviation) on these problems.
TOLERANCE = 5e-6


def _unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _problem(seed, n=300, m=60, d=16):
    rng = np.random.default_rng(seed)
    return _unit_rows(rng.normal(size=(n, d))), _unit_rows(rng.normal(size=(m, d)) + 0.3)


def _pot_potentials(pool, target, reg, iters):
    import ot

    a, b = np.full(len(pool), 1 / len(pool)), np.full(len(target), 1 / len(target))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, log = ot.sinkhorn(a, b, squared_distances(pool, target), reg, numItermax=iters,
                             stopThr=1e-12, log=True)
    return reg * np.log(log["u"])


@pytest.mark.parametrize("reg", [0.1, 0.05])
def test_float32_scores_match_pot_float64(reg):
    pool, target = _problem(0)
    potentials, steps = solve(pool, target, reg, iters=3000)
    assert steps < 3000  # stopped at float32's floor, far below POT's 1e-9 stop
    ours = calibrated_gradient(potentials)
    reference = calibrated_gradient(_pot_potentials(pool, target, reg, iters=3000))
    np.testing.assert_allclose(ours, reference, rtol=0, atol=TOLERANCE)
    budget = len(pool) // 10
    assert set(np.argsort(ours)[:budget]) == set(np.argsort(reference)[:budget])


def test_small_reg_absorbs_into_the_potentials_and_still_matches(monkeypatch):
    """reg 0.01 in 4 dims: the scalings leave float32's range (inf, then NaN potentials)
    unless absorbed into f, g."""
    pool, target = _problem(0, d=4)
    rebuilt = []
    kernel = sinkhorn._kernel
    monkeypatch.setattr(sinkhorn, "_kernel", lambda *a: rebuilt.append(1) or kernel(*a))
    ours = calibrated_gradient(sinkhorn_potentials(pool, target, 0.01, iters=3000))
    reference = calibrated_gradient(_pot_potentials(pool, target, 0.01, iters=3000))
    assert rebuilt, "no absorption happened: the test no longer covers it"
    np.testing.assert_allclose(ours, reference, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("flushing", [False, True])
def test_solver_settings_restore_threads_and_denormal_mode(flushing):
    tiny = torch.tensor([1e-20])  # tiny² = 1e-40 is a float32 denormal
    threads = torch.get_num_threads()
    was = float(tiny * tiny) == 0.0
    torch.set_flush_denormal(flushing)
    try:
        with solver_settings(1):
            assert torch.get_num_threads() == 1
            assert float(tiny * tiny) == 0.0
        assert torch.get_num_threads() == threads
        assert (float(tiny * tiny) == 0.0) == flushing
    finally:
        torch.set_flush_denormal(was)
