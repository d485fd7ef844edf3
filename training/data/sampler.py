"""Global batches over the blended sample stream, sharded over data-parallel ranks.

Global batch b is samples [b * global_batch, (b + 1) * global_batch) of the (already
shuffled) blended dataset, whatever the DP size: rank r takes the r-th contiguous slice of
global_batch / dp_size samples and splits it into micro-batches. So the data a step trains on
does not depend on how many ranks share it, and resuming is just starting at
`consumed_samples` (a whole number of global batches, as checkpoints record it).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class GlobalBatchSampler:
    """Yields this rank's micro-batches of sample indices (np.int64 arrays), in step order."""

    def __init__(self, total_samples: int, global_batch: int, micro_batch: int, dp_rank: int,
                 dp_size: int, consumed_samples: int = 0):
        if global_batch % (micro_batch * dp_size):
            raise ValueError(f"global batch {global_batch} is not a multiple of micro batch "
                             f"{micro_batch} x DP size {dp_size}")
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} outside [0, {dp_size})")
        if consumed_samples % global_batch:
            raise ValueError(f"consumed_samples {consumed_samples} is not a whole number of "
                             f"global batches of {global_batch}")
        self.total_samples = total_samples
        self.global_batch = global_batch
        self.micro_batch = micro_batch
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.consumed_samples = consumed_samples

    @property
    def num_global_batches(self) -> int:
        """Whole global batches left (a last partial one is dropped, as Megatron does)."""
        return max(0, (self.total_samples - self.consumed_samples) // self.global_batch)

    def __len__(self) -> int:
        return self.num_global_batches * self.global_batch // (self.micro_batch * self.dp_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        per_rank = self.global_batch // self.dp_size
        for b in range(self.num_global_batches):
            first = self.consumed_samples + b * self.global_batch + self.dp_rank * per_rank
            mine = np.arange(first, first + per_rank, dtype=np.int64)
            yield from mine.reshape(-1, self.micro_batch)
