"""Ring attention as one autograd function: K/V memory per rank falls as 1/CP.

Forward: a rank's queries meet the cp K/V blocks of the sequence as they pass around the CP
ring (at step j, the block that started on rank r − j; the next block's exchange is posted
before this block's compute, so the two overlap); the partial results merge by an online
softmax. Only the local q, k, v, the output and the log-sum-exp are saved: no received block
outlives its step.

Backward (the flash-attention gradient, one block at a time): K/V go around the ring again,
each with an accumulator of its own gradient that travels with it. At step j a rank adds its
queries' part of dK/dV to the accumulator it holds (the block of rank r − j), and passes it on;
after cp steps every accumulator has visited every rank, and a last shift hands it home.

    P = exp(S − lse)          (softmax rows, with the final lse: no renormalisation needed)
    dV += Pᵈᵀ dO,   dPᵈ = dO Vᵀ,   dS = P ∘ (M ∘ dPᵈ / (1 − p) − rowsum(dO ∘ O))
    dQ += dS K · scale,   dK += dSᵀ Q · scale

`Pᵈ = P ∘ M / (1 − p)` with attention dropout (mask M), else P. Dropout masks are regenerated
in the backward from a seed drawn once per call and the block's (query rank, key rank): the
same bits, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.blocks import repeat_kv
from training.parallel import comm

MASKED = -1e30  # finite, so a row with no visible key has weight exp(-1e30 - lse) = 0
BLOCK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class Ring:
    """This rank's place in the CP ring: global ranks of its neighbours."""

    group: object
    cp: int
    cp_rank: int
    next_rank: int
    prev_rank: int

    def owner(self, step: int) -> int:
        """The CP rank whose K/V block this rank holds at `step`."""
        return (self.cp_rank - step) % self.cp

    def shift(self, tensor: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Post: send `tensor` to the next rank, receive the previous rank's into a new buffer.
        Returns (buffer, what to wait on)."""
        received = torch.empty_like(tensor)
        sends, recvs = comm.post_p2p([(tensor, self.next_rank)],
                                     [(received, self.prev_rank)], self.group)
        return received, sends + recvs


def wait_all(pending: list) -> list:
    """Wait on every op (each once: a second wait on a finished gloo op blocks); returns []."""
    for op in pending:
        comm.wait(op)
    return []


@dataclass(frozen=True)
class Visibility:
    """Which keys a query may see: causal over global positions, and within one document
    when `documents` (per-token document ids [batch, seq] of the whole sequence) is given."""

    positions: list[torch.Tensor]  # global positions of each CP rank's tokens
    documents: torch.Tensor | None

    def block(self, q_rank: int, k_rank: int) -> torch.Tensor:
        """bool [sq, sk], or [batch, 1, sq, sk] with documents."""
        q_pos, k_pos = self.positions[q_rank], self.positions[k_rank]
        visible = q_pos[:, None] >= k_pos[None, :]
        if self.documents is None:
            return visible
        same = self.documents[:, q_pos, None] == self.documents[:, None, k_pos]
        return (same & visible).unsqueeze(1)


def dropout_seed(device: torch.device) -> int:
    """One draw from the current stream (the attention's RNG region): the call's dropout seed."""
    return int(torch.randint(0, 2**62, (1,), device=device))


def dropout_keep(seed: int, q_rank: int, k_rank: int, cp: int, shape, p: float,
                 device: torch.device) -> torch.Tensor:
    """The keep-mask of one (query rank, key rank) block: a function of the seed and the block
    only, so the backward redraws the forward's bits."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed + BLOCK_SEED_STRIDE * (q_rank * cp + k_rank)) % 2**63)
    return torch.rand(shape, generator=generator, device=device) >= p


def _group_sum(grad: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """The gradient of `repeat_kv`: each KV head's query group summed."""
    batch, heads = grad.shape[:2]
    return grad.view(batch, kv_heads, heads // kv_heads, *grad.shape[2:]).sum(2)


def _scores(q, k, visible, scale):
    scores = torch.matmul(q, k.transpose(-2, -1)).float() * scale
    return scores.masked_fill(~visible, MASKED)


class RingAttentionFunction(torch.autograd.Function):
    """q [batch, heads, local_seq, head_dim] (this rank's load-balanced slice), k, v [batch,
    kv_heads, local_seq, head_dim] -> attention output of q's shape. Grouped-query K/V travel
    unrepeated: the ring carries kv_heads, not heads."""

    @staticmethod
    def forward(ctx, q, k, v, ring: Ring, visibility: Visibility, dropout: float, seed: int):
        scale = q.shape[-1] ** -0.5
        out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        lse = torch.full(q.shape[:-1], MASKED, dtype=torch.float32, device=q.device)
        kv, pending = torch.stack([k, v]), []
        for step in range(ring.cp):
            pending = wait_all(pending)
            current = kv
            if step < ring.cp - 1:  # the next block travels while this one is computed
                kv, pending = ring.shift(current)
            owner = ring.owner(step)
            visible = visibility.block(ring.cp_rank, owner)
            if not visible.any():
                continue
            key, value = repeat_kv(current[0], q.shape[1]), repeat_kv(current[1], q.shape[1])
            scores = _scores(q, key, visible, scale)
            block_lse = torch.logsumexp(scores, dim=-1)
            probs = torch.exp(scores - block_lse.unsqueeze(-1))
            if dropout:
                keep = dropout_keep(seed, ring.cp_rank, owner, ring.cp, probs.shape, dropout,
                                    q.device)
                probs = probs * keep / (1 - dropout)
            block_out = torch.matmul(probs.to(v.dtype), value).float()
            merged = torch.logaddexp(lse, block_lse)
            out = out * (lse - merged).exp().unsqueeze(-1) \
                + block_out * (block_lse - merged).exp().unsqueeze(-1)
            lse = merged
        wait_all(pending)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.ring, ctx.visibility, ctx.dropout, ctx.seed = ring, visibility, dropout, seed
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        ring, dropout = ctx.ring, ctx.dropout
        scale = q.shape[-1] ** -0.5
        grad_out = grad_out.contiguous()
        row_dot = (grad_out.float() * out.float()).sum(-1, keepdim=True)  # rowsum(dO ∘ O)
        grad_q = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        kv = torch.stack([k, v])
        grad_kv = torch.zeros(kv.shape, dtype=torch.float32, device=q.device)
        kv_pending, grad_pending = [], []
        for step in range(ring.cp):
            kv_pending = grad_pending = wait_all(kv_pending + grad_pending)
            current = kv
            if step < ring.cp - 1:
                kv, kv_pending = ring.shift(current)
            owner = ring.owner(step)
            visible = ctx.visibility.block(ring.cp_rank, owner)
            if visible.any():
                key, value = repeat_kv(current[0], q.shape[1]), repeat_kv(current[1], q.shape[1])
                probs = torch.exp(_scores(q, key, visible, scale) - lse.unsqueeze(-1))
                grad_probs = torch.matmul(grad_out, value.transpose(-2, -1)).float()
                if dropout:
                    keep = dropout_keep(ctx.seed, ring.cp_rank, owner, ring.cp, probs.shape,
                                        dropout, q.device) / (1 - dropout)
                    dropped, grad_probs = probs * keep, grad_probs * keep
                else:
                    dropped = probs
                grad_scores = probs * (grad_probs - row_dot)
                grad_q += torch.matmul(grad_scores.to(q.dtype), key).float() * scale
                kv_heads = k.shape[1]
                grad_kv[0] += _group_sum(torch.matmul(grad_scores.transpose(-2, -1).to(q.dtype),
                                                      q).float() * scale, kv_heads)
                grad_kv[1] += _group_sum(torch.matmul(dropped.transpose(-2, -1).to(q.dtype),
                                                      grad_out).float(), kv_heads)
            if ring.cp > 1:  # pass the accumulator on; the last shift hands it to its owner
                grad_kv, grad_pending = ring.shift(grad_kv)
        wait_all(kv_pending + grad_pending)
        grad_k, grad_v = grad_kv.to(k.dtype).unbind(0)
        return grad_q.to(q.dtype), grad_k, grad_v, None, None, None, None
