"""GOT-D's score is the gradient of the entropic OT cost with respect to a candidate's mass."""

import numpy as np
import pytest

from curation.select.features import hashed_embeddings
from curation.select.got import calibrated_gradient, squared_distances
from curation.select.sinkhorn import sinkhorn_potentials

REG = 0.5


def _entropic_ot(a, b, cost, reg=REG, iters=3000):
    """min_P <P, C> + reg Σ P (log P − 1) over couplings of (a, b), by Sinkhorn to
    machine precision, and the dual potential f of the first marginal."""
    kernel = np.exp(-cost / reg)
    v = np.ones(len(b))
    for _ in range(iters):
        u = a / (kernel @ v)
        v = b / (kernel.T @ u)
    plan = u[:, None] * kernel * v[None, :]
    value = (plan * cost).sum() + reg * (plan * (np.log(plan) - 1)).sum()
    return value, reg * np.log(u)


def test_calibrated_gradient_matches_finite_differences_of_the_ot_cost():
    rng = np.random.default_rng(0)
    pool, target = rng.normal(size=(20, 3)), rng.normal(size=(10, 3)) + 0.5
    cost = squared_distances(pool, target)
    a, b = np.full(20, 1 / 20), np.full(10, 1 / 10)
    grad = calibrated_gradient(sinkhorn_potentials(pool, target, REG, iters=5000))
    h = 1e-5
    for i in range(20):
        direction = np.full(20, -1 / 19)
        direction[i] = 1.0  # more mass on i, taken evenly from the others
        up, _ = _entropic_ot(a + h * direction, b, cost)
        down, _ = _entropic_ot(a - h * direction, b, cost)
        assert grad[i] == pytest.approx((up - down) / (2 * h), abs=1e-6)


def test_calibrated_gradient_ignores_the_dual_constant():
    f = np.array([0.3, -1.0, 2.0, 0.1])
    np.testing.assert_allclose(calibrated_gradient(f), calibrated_gradient(f + 7.0))


def test_hashed_embeddings_are_unit_vectors_and_empty_text_is_zero():
    emb = hashed_embeddings(["the cat sat on the mat", "", "a b c"], 64)
    assert emb.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(emb[[0, 2]], axis=1), 1.0, rtol=1e-5)
    assert not emb[1].any()
