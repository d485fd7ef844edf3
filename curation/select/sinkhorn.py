"""Dual potentials of entropic OT by a stabilised scaling Sinkhorn in torch (float32 kernel).

Why not POT: on a real GOT-D chunk (50,000 pool × 2,000 target embeddings, 200 iterations,
one thread) this solver took SOLVER_SECONDS against POT's ot.sinkhorn in float64, with the
same chosen set (bench/select_ot_solvers.py, bench/RESULTS.md). Each Sinkhorn iteration
reads the whole n × m kernel twice (K v, then Kᵀ u) and is bound by memory bandwidth, so
the gains come from reading less: the kernel is float32 (half the bytes) and one *fused*
pass per iteration updates u block by block of rows and adds that block's Kᵀ u while the
block is still in cache (one read of the kernel per iteration instead of two).

Stabilised as in Schmitzer (2019, "Stabilized sparse scaling algorithms for entropy
regularized transport problems", §3.1, absorption): the kernel is exp((f_i + g_j − C_ij)/reg)
with running dual potentials f, g; the scalings u, v multiply it, and whenever one leaves
[e^−ABSORB, e^ABSORB] they are folded into f, g (f += reg·log u, g += reg·log v) and the
kernel is rebuilt, so no float32 value overflows or underflows whatever `reg`. f and g
start as the row minima of C and the column minima of the rest, so every row and every
column of the first kernel holds a 1 and no marginal is ever empty. The iterates are
Sinkhorn's (u ← a / K v, v ← b / Kᵀ u, from v = 1), only re-parametrised.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

ABSORB = 30.0  # e^30 leaves float32 (max ≈ e^88) ample room for u · K · v
BLOCK = 256  # rows per fused step: 256 × 2,000 float32 = 2 MiB, one core's L2 here


def _flushing_denormals() -> bool:
    tiny = torch.tensor([1e-20], dtype=torch.float32)  # tiny² = 1e-40 is a denormal
    return float(tiny * tiny) == 0.0


@contextmanager
def solver_settings(threads: int):
    """torch's intra-op threads set to `threads` (one per Dask worker thread) and float32
    denormals flushed to zero (kernel entries below 1e-38 are negligible mass, and
    arithmetic on denormals is ~10x slower) for the block; both restored after it."""
    before, flushing = torch.get_num_threads(), _flushing_denormals()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.set_flush_denormal(flushing)


def _cost(pool: torch.Tensor, target: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """C_ij = |p_i|² + |t_j|² − 2 p_i·t_j, clipped at 0, as one n × m matrix of `dtype`."""
    rows = (pool * pool).sum(1).to(dtype)[:, None]
    cost = torch.addmm(rows, pool.to(dtype), target.to(dtype).T, alpha=-2.0)
    return cost.add_((target * target).sum(1).to(dtype)[None, :]).clamp_(min=0.0)


def _kernel(pool: torch.Tensor, target: torch.Tensor, f: torch.Tensor, g: torch.Tensor,
            reg: float, dtype: torch.dtype) -> torch.Tensor:
    """exp((f_i + g_j − C_ij) / reg), rebuilt after an absorption."""
    rows = ((f - (pool * pool).sum(1)) / reg).to(dtype)[:, None]
    kernel = torch.addmm(rows, pool.to(dtype), target.to(dtype).T, alpha=2.0 / reg)
    return kernel.add_(((g - (target * target).sum(1)) / reg).to(dtype)[None, :]).exp_()


def _fused_pass(kernel: torch.Tensor, a: torch.Tensor, v: torch.Tensor, u: torch.Tensor,
                w: torch.Tensor) -> None:
    """u ← a / (K v) and w ← Kᵀ u, reading each block of kernel rows once from memory."""
    w.zero_()
    for start in range(0, kernel.shape[0], BLOCK):
        rows = kernel[start:start + BLOCK]
        part = u[start:start + BLOCK]
        torch.mv(rows, v, out=part)
        torch.div(a[start:start + BLOCK], part, out=part)
        w.addmv_(rows.T, part)


def sinkhorn_potentials(pool: np.ndarray, target: np.ndarray, reg: float, iters: int,
                        tol: float = 1e-9, dtype: torch.dtype = torch.float32,
                        threads: int = 1) -> np.ndarray:
    """The dual potential f (float64) of every pool point for uniform masses on both sides
    and cost = squared Euclidean distance; stops at `iters` u-updates or when the column
    marginal's L1 error falls below `tol`."""
    with solver_settings(threads), torch.no_grad():
        p = torch.from_numpy(np.asarray(pool, dtype=np.float64))
        t = torch.from_numpy(np.asarray(target, dtype=np.float64))
        n, m = len(p), len(t)
        kernel = _cost(p, t, dtype)  # becomes the kernel in place: one n × m buffer
        f = kernel.min(1).values
        kernel.sub_(f[:, None])
        g = kernel.min(0).values
        kernel.sub_(g[None, :]).mul_(-1.0 / reg).exp_()
        f, g = f.to(torch.float64), g.to(torch.float64)
        a = torch.full((n,), 1.0 / n, dtype=dtype)
        b = torch.full((m,), 1.0 / m, dtype=dtype)
        u, w = torch.empty(n, dtype=dtype), torch.empty(m, dtype=dtype)
        v = torch.ones(m, dtype=dtype)
        for step in range(iters):
            _fused_pass(kernel, a, v, u, w)
            if step == iters - 1 or float((v * w - b).abs().sum()) < tol:
                break
            torch.div(b, w, out=v)
            if max(float(u.log().abs().max()), float(v.log().abs().max())) > ABSORB:
                f += reg * u.log().to(torch.float64)
                g += reg * v.log().to(torch.float64)
                kernel = _kernel(p, t, f, g, reg, dtype)
                v.fill_(1.0)
        return (f + reg * u.log().to(torch.float64)).numpy()
