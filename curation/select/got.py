"""GOT-D's score: the calibrated gradient of the entropic OT distance (Kang et al. 2024).

GOT-D ("Get more for less", ICLR 2024, §3) picks, from a candidate pool D_U, the
documents that move the pool's distribution toward the target D_T fastest: the
candidates with the most negative gradient of OT(μ_U, μ_T) with respect to their own
probability mass. The steps, as the paper's method section lays them out:

1. The distance: entropy-regularised OT between the uniform empirical measures of pool
   and target embeddings, cost = squared Euclidean distance (the paper's OT problem,
   solved with Sinkhorn as in its implementation).
2. Its gradient with respect to candidate i's mass, read off the dual: the optimal dual
   potential f_i is ∂OT/∂a_i (envelope theorem; the paper takes this from LAVA,
   Just et al. 2023). Masses must still sum to one, so the paper uses the *calibrated*
   gradient, the derivative along "more mass on i, taken evenly from the others":
   f_i − Σ_{j≠i} f_j / (N − 1). That value is also invariant to the dual's free
   constant (f + c, g − c is the same solution).
3. Selection: the budget of candidates with the most negative calibrated gradient.

For scale the paper solves the pool in pieces; here chunk c holds the in-scope documents
whose global position g has g mod K = c (K chunks of at most `chunk` documents), so every
chunk is a proportional sample of every partition and source, and each chunk is solved
against the whole target. Scores from different chunks are comparable because the
calibrated gradient removes each solve's free constant and the chunks are equal-sized
(±1) samples of one pool against one target, so their potentials share one scale.

The solver is curation/select/sinkhorn.py: a stabilised scaling Sinkhorn in torch with a
float32 kernel, one thread. Measured on a real 50,000 × 2,000 chunk against POT's
ot.sinkhorn in float64 (the earlier solver), it is 4.0× faster (3.0 against 11.9 CPU s)
and chooses the same documents (all of the chosen 10%, Spearman 1.0000000 over the
scores; bench/select_ot_solvers.py). The embeddings are unit vectors, so the cost is in
[0, 4]; the solver's absorption keeps float32 in range for any reg ≥ 0.01.
"""

from __future__ import annotations

import numpy as np

from curation.select.sinkhorn import sinkhorn_potentials


def squared_distances(pool: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(len(pool), len(target)) squared Euclidean distances, float64, clipped at 0."""
    pool = pool.astype(np.float64, copy=False)
    target = target.astype(np.float64, copy=False)
    cost = (pool * pool).sum(1)[:, None] + (target * target).sum(1)[None, :]
    cost -= 2.0 * pool @ target.T
    return np.maximum(cost, 0.0)


def calibrated_gradient(potentials: np.ndarray) -> np.ndarray:
    """f_i − mean of the other f_j: ∂OT/∂a_i along a mass-preserving direction."""
    n = len(potentials)
    if n < 2:
        return np.zeros(n)
    return (n * potentials - potentials.sum()) / (n - 1)


def got_scores(pool: np.ndarray, target: np.ndarray, reg: float, iters: int) -> np.ndarray:
    """GOT-D's score per pool point: lower (more negative) is chosen first."""
    if len(pool) == 0:
        return np.zeros(0)
    return calibrated_gradient(sinkhorn_potentials(pool, target, reg, iters))


def chunk_count(n: int, chunk: int) -> int:
    """K: the number of chunks of at most `chunk` documents for a pool of n."""
    return max(1, -(-n // chunk))
