"""Standard normals addressed by (key, element index): any box of a large random tensor can be
drawn alone, on its own device, and equals that box of the whole draw.

A tensor-parallel rank needs only its slice of a random weight-sized tensor (GGPO's
perturbation, finetune/ggpo.py). A stateful generator (torch's, or the model-parallel region
of rng.py) cannot give it that slice without drawing everything before it, and the region
streams differ per TP rank by design, so a sliced draw from them would not be one process's
draw. Here each element's value is a pure function of the key and its global flat index
(a counter-based generator): a 32-bit integer hash of (index, key) gives two uniforms, and
the Box-Muller transform one normal. The hash (xor-shift / multiply rounds with odd
constants) is computed in int64 on 32-bit values, with each product split in 16-bit halves
so nothing overflows.
"""

from __future__ import annotations

import math

import torch

MASK32 = 0xFFFFFFFF
ROUND_CONSTANTS = (0x7FEB352D, 0x846CA68B)
STREAM_SALTS = (0x9E3779B9, 0x85EBCA6B)  # the two uniforms of one element


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """x * constant mod 2^32 for 32-bit x, without leaving int64's range."""
    low, high = x & 0xFFFF, x >> 16
    return (low * constant + (((high * constant) & 0xFFFF) << 16)) & MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, ROUND_CONSTANTS[0])
    x = x ^ (x >> 15)
    x = _mul32(x, ROUND_CONSTANTS[1])
    return x ^ (x >> 16)


def _uniform(index: torch.Tensor, key: int, salt: int) -> torch.Tensor:
    """A uniform in (0, 1), float64, per int64 index."""
    h = _mix32((index & MASK32) ^ (key & MASK32))
    h = _mix32(h ^ (index >> 32) ^ ((key >> 32) & MASK32))
    h = _mix32(h ^ salt)
    return (h.double() + 0.5) / 2.0**32


def normal_box(key: int, full_shape: tuple[int, int], rows: tuple[int, int],
               cols: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Rows [r0, r1) x columns [c0, c1) of the standard-normal matrix of `full_shape` drawn
    under `key` (a non-negative int below 2^63), float32 on `device`."""
    (r0, r1), (c0, c1), width = rows, cols, full_shape[1]
    row = torch.arange(r0, r1, dtype=torch.int64, device=device).unsqueeze(1)
    col = torch.arange(c0, c1, dtype=torch.int64, device=device).unsqueeze(0)
    index = row * width + col
    u1, u2 = (_uniform(index, key, salt) for salt in STREAM_SALTS)
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).float()
