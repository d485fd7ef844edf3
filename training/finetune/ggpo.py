"""LoRA-GGPO: gradient-guided perturbation of the LoRA-adapted weights (Chang et al., 2025,
"LoRA-GGPO: Mitigating Double Descent in LoRA Fine-Tuning via Gradient-Guided Perturbation
Optimization", arXiv:2502.14538v1).

Source of the formulas. The paper's method section could not be read from this machine: the
stored copies of arXiv:2502.14538 (ar5iv; arxiv.org/html v1 and v2) hold its title and
abstract only (v2 and v3 are the retitled LoRA-MGPO, another method: a momentum-guided
direction whose size follows an EMA of gradient norms), and the authors' repository
(llm172/LoRA-GGPO) has no snapshot here. A third-party summary of v1 (themoonlight.io) gives
its objective, min_{A,B} E_{epsilon ~ N(0, Sigma)} L(W + BA + epsilon), and the start of
Sigma = sigma^2 / n * diag(||W'_1||, ...), cut off there (it does not say which dimension n
is; here, as in the implementation below, it is d_out); the paper's equation numbers are not
known. The equations below follow the public implementation of LoRA-GGPO in
kohya-ss/sd-scripts (`ggpo_sigma`, `ggpo_beta`; LoRAModule.update_norms / update_grad_norms /
forward), which credits the paper and agrees with that objective and diagonal covariance; the
numbering (G1)-(G5) is this module's, the config keys `sigma` and `beta` are the summary's
sigma and the implementation's beta. Where that implementation approximates (the mean row
norm of W0 estimated from sampled rows), the exact quantity is computed here.

For an adapted linear with frozen W0 [d_out, d_in], adapters B [d_out, r], A [r, d_in] and
scale s = alpha / r, at every training step t:

  (G1)  W'_t = W0 + s B_t A_t                            the merged weight
  (G2)  G_{t-1} = s (B ∇A + ∇B A)  (gradients of step t-1)  the full-weight gradient,
        approximated from the adapters' gradients (∇_A = s B^T ∇W, ∇_B = s ∇W A^T)
  (G3)  std_i = (sigma ||W'_{t,i,:}||_2 + beta ||G_{t-1,i,:}||_2^2) / sqrt(d_out)
                                                          one standard deviation per output row
  (G4)  epsilon_ij ~ N(0, std_i^2)                        drawn afresh every step
  (G5)  the step's forward and backward run at W'_t + epsilon (y = x (W0 + epsilon)^T +
        s x A^T B^T): the gradients of A and B are those of the perturbed loss
        L(W0 + s B A + epsilon), i.e. a random-weight-perturbation step towards flat minima
        whose size follows the weight's scale and the recent gradient, with no second pass.

The first step has no gradient yet (G2), so, as in the reference implementation, it is not
perturbed. The state GGPO carries from step to step is (G2)'s squared row norms: they are
written into checkpoints (`ggpo/<linear>.grad_sq`, global tensors like the weights) and read
back on resume, so an interrupted run continues exactly as an uninterrupted one.
epsilon is never written into W0 (the base stays bit-identical) and is not used in evaluation.

Parallel layouts. epsilon's standard normals come from a counter-based generator
(parallel/counter_rng.py) keyed by (seed, step, layer name): each TP rank draws only its own
box of the [d_out, d_in] matrix (rows for a column-parallel linear, columns for a
row-parallel one), and that box equals the same box of one process's draw, so the
perturbation is the same at every (TP, PP, DP). One draw serves all micro-batches of the step
(and the recompute of a checkpointed block). The row norms of (G1) and (G2) are summed over
TP for a row-parallel linear (its rows are split). The gradients in (G2) are the DP-reduced
ones, gathered from the ZeRO shards (`reduced_gradients`), taken before clipping.
"""

from __future__ import annotations

import math
import zlib

import torch
import torch.distributed as dist
from torch import nn

from training.finetune.config import GgpoConfig
from training.finetune.lora import LoraLinear
from training.parallel import comm
from training.parallel.counter_rng import normal_box
from training.parallel.grad_buckets import GradBuckets


def row_sq_norms(matrix: torch.Tensor, layer: LoraLinear) -> torch.Tensor:
    """||M_i,:||^2 per output row of the full matrix whose slice this rank holds."""
    sq = matrix.float().pow(2).sum(dim=1)
    if layer.row and comm.group_size(layer.group) > 1:  # rows split over TP: sum the parts
        comm.all_reduce(sq, layer.group, op=dist.ReduceOp.SUM)
    return sq


def full_weight_gradient(layer: LoraLinear, grad_a: torch.Tensor,
                         grad_b: torch.Tensor) -> torch.Tensor:
    """(G2): s (B ∇A + ∇B A), this rank's slice."""
    return layer.scale * (layer.lora_B @ grad_a + grad_b @ layer.lora_A)


def row_std(weight_sq: torch.Tensor, grad_sq: torch.Tensor, d_out: int,
            cfg: GgpoConfig) -> torch.Tensor:
    """(G3) from the squared row norms of W' and of G."""
    return (cfg.sigma * weight_sq.sqrt() + cfg.beta * grad_sq) / math.sqrt(d_out)


def noise_key(seed: int, step: int, name: str) -> int:
    """(seed, step) in the high 31 bits, the layer in the low 32: no two layers or steps of a
    run share a draw."""
    return (((seed * 1_000_003 + step) & 0x7FFFFFFF) << 32) | zlib.crc32(name.encode())


def draw_noise(full_shape: tuple[int, int], seed: int, step: int, name: str,
               box: tuple[tuple[int, int], tuple[int, int]] | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """The box (rows, columns; default all) of the step's standard-normal draw for one layer:
    the same numbers whichever rank draws it, and only the box is computed."""
    box = box or ((0, full_shape[0]), (0, full_shape[1]))
    return normal_box(noise_key(seed, step, name), full_shape, *box, device=device)


def layer_perturbation(layer: LoraLinear, grad_sq: torch.Tensor, cfg: GgpoConfig, seed: int,
                       step: int) -> torch.Tensor:
    """(G1)-(G4): this rank's slice of epsilon for `layer` at `step`."""
    with torch.no_grad():
        merged = layer.weight + layer.delta_weight()
        std = row_std(row_sq_norms(merged, layer), grad_sq, layer.full_shape[0], cfg)
        noise = draw_noise(layer.full_shape, seed, step, layer.name, layer.box,
                           layer.weight.device)
        # column-parallel: `std` holds this rank's rows; row-parallel: all rows (summed norms)
        return (noise * std.unsqueeze(1)).to(layer.weight.dtype)


def reduced_gradients(buckets: GradBuckets) -> torch.Tensor:
    """Every trainable parameter's DP-reduced gradient in the buckets' flat layout: the ZeRO
    shards all-gathered (stages 1-2), or the all-reduced buffers (stage 0)."""
    full = torch.empty_like(buckets.params)
    for index, bucket in enumerate(buckets.buckets):
        if buckets.sharded:
            comm.all_gather_into(full[bucket.start: bucket.end], buckets.local_grad(index),
                                 buckets.group)
        else:
            full[bucket.start: bucket.end] = buckets.grad_buffers[index]
    return full


def state_key(name: str) -> str:
    return f"ggpo/{name}.grad_sq"


class GGPO:
    """Per-step perturbations of every adapted linear on this rank."""

    def __init__(self, layers: dict[str, LoraLinear], cfg: GgpoConfig, seed: int):
        self.layers, self.cfg, self.seed = layers, cfg, seed
        self.grad_sq: dict[str, torch.Tensor] = {}  # (G2) row norms^2 of the last step

    def begin_step(self, step: int) -> None:
        """Set each layer's epsilon for training step `step` (none before a gradient)."""
        for name, layer in self.layers.items():
            grad_sq = self.grad_sq.get(name)
            layer.perturbation = None if grad_sq is None else layer_perturbation(
                layer, grad_sq, self.cfg, self.seed, step)

    def observe_gradients(self, buckets: GradBuckets) -> None:
        """After the DP reduction of a step: (G2)'s row norms for the next step."""
        flat = reduced_gradients(buckets)

        def grad(param: nn.Parameter) -> torch.Tensor:
            offset = buckets.offsets[param]
            return flat[offset: offset + param.numel()].view_as(param)

        with torch.no_grad():
            for name, layer in self.layers.items():
                g = full_weight_gradient(layer, grad(layer.lora_A), grad(layer.lora_B))
                self.grad_sq[name] = row_sq_norms(g, layer)

    def _rows(self, layer: LoraLinear) -> tuple[int, int]:
        """The rows of the full (G2) norms this rank holds: its own with a column-parallel
        split, else all (the row-parallel sums are whole on every TP rank)."""
        rows = layer.box[0]
        return rows if rows[1] - rows[0] < layer.full_shape[0] else (0, layer.full_shape[0])

    def checkpoint_pieces(self, writes_replicated: bool, writes_own: bool):
        """(key, global shape, offset, values) of the (G2) norms this rank writes: its rows of
        a TP-split linear when `writes_own` (the first DP x CP rank), whole ones when
        `writes_replicated` (that rank and TP rank 0)."""
        pieces = []
        for name, layer in self.layers.items():
            if name not in self.grad_sq:
                continue
            (r0, r1), d_out = self._rows(layer), layer.full_shape[0]
            whole = r1 - r0 == d_out
            if (writes_replicated if whole else writes_own):
                pieces.append((state_key(name), [d_out], [r0], self.grad_sq[name]))
        return pieces

    def load(self, reader) -> bool:
        """The (G2) norms of a checkpoint, if it holds them (a run saved without GGPO does
        not: its first step here is then unperturbed); returns whether it did."""
        keys = reader.index["tensors"]
        if not all(state_key(name) in keys for name in self.layers):
            return False
        for name, layer in self.layers.items():
            r0, r1 = self._rows(layer)
            self.grad_sq[name] = reader.read_box(state_key(name), [r0], [r1 - r0]).to(
                layer.weight.device)
        return True

    def end(self) -> None:
        for layer in self.layers.values():
            layer.perturbation = None
