"""Standard normals addressed by (key, element index): any box of a large random tensor can be
drawn alone, on its own device, and equals that box of the whole draw.

A tensor-parallel rank needs only its slice of a random weight-sized tensor (GGPO's
perturbation, finetune/ggpo.py). A stateful generator (torch's, or the model-parallel region
of rng.py) cannot give it that slice without drawing everything before it, and the region
streams differ per TP rank by design, so a sliced draw from them would not be one process's
draw. Here each element's value is a pure function of the key and its global flat index
(a counter-based generator): a 32-bit integer hash of (index, key) gives two uniforms, and
the Box-Muller transform one normal. The hash (xor-shift / multiply rounds) works in int64 on
32-bit values with multipliers below 2^31, so no product leaves int64's range; it runs in
place, vectorised, on the tensor's own device.
"""

from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
MULTIPLIERS = (0x7FEB352D, 0x5BD1E995)  # odd, below 2^31
STREAM_SALTS = (0x9E3779B9, 0x85EBCA6B)  # the two uniforms of one element


def _mix32(x: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit hash of each element, in place (`scratch`: a buffer like x)."""
    for shift, multiplier in zip((16, 15), MULTIPLIERS, strict=True):
        x ^= torch.bitwise_right_shift(x, shift, out=scratch)
        x.mul_(multiplier).bitwise_and_(MASK32)
    x ^= torch.bitwise_right_shift(x, 16, out=scratch)
    return x


def normal_box(key: int, full_shape: tuple[int, int], rows: tuple[int, int],
               cols: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Rows [r0, r1) x columns [c0, c1) of the standard-normal matrix of `full_shape` drawn
    under `key` (a non-negative int below 2^63), float32 on `device`."""
    (r0, r1), (c0, c1), width = rows, cols, full_shape[1]
    index = torch.arange(r0, r1, dtype=torch.int64, device=device).unsqueeze(1) * width + \
        torch.arange(c0, c1, dtype=torch.int64, device=device).unsqueeze(0)
    scratch = torch.empty_like(index)
    base = _mix32(torch.bitwise_and(index, MASK32).bitwise_xor_(key & MASK32), scratch)
    if full_shape[0] * width > MASK32:  # a matrix of more than 2^32 elements: the high word
        base = _mix32(base.bitwise_xor_(index.bitwise_right_shift_(32)), scratch)
    base ^= key >> 32
    uniforms = []
    for salt in STREAM_SALTS:
        bits = _mix32(torch.bitwise_xor(base, salt, out=index), scratch)
        uniforms.append(bits.float().add_(0.5).div_(2.0**32))
    u1, u2 = uniforms
    return u1.log_().mul_(-2.0).sqrt_().mul_(u2.mul_(2.0 * math.pi).cos_())
