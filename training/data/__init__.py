"""Token shards -> packed samples -> a weighted blend -> data-parallel global batches."""

from training.data.blend import blend_indices, normalise_weights
from training.data.cache import IndexBuildError
from training.data.dataset import BlendedDataset, build_blended_dataset
from training.data.gpt_dataset import GPTDataset
from training.data.shards import ShardError, SourceShards

__all__ = [
    "BlendedDataset",
    "GPTDataset",
    "IndexBuildError",
    "ShardError",
    "SourceShards",
    "blend_indices",
    "build_blended_dataset",
    "normalise_weights",
]
