"""Megatron-style parallelism: the process grid, tensor-parallel layers, gradient buckets and
the distributed optimizer."""
