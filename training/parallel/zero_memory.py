"""Model-state memory per rank: what the ZeRO paper predicts for each stage, and what this
rank actually holds, counted from the tensors that exist.

The paper's mixed-precision model, Ψ parameters over N data-parallel ranks: bf16 parameters
(2Ψ), bf16 gradients (2Ψ), fp32 master weights and two Adam moments (12Ψ). Stage 1 shards
the 12Ψ, stage 2 the gradients too, stage 3 the parameters too. With `dtype: fp32` the
parameters and gradients take 4Ψ each and the parameters are the master weights, so the
optimizer state is the moments alone (8Ψ).
"""

from __future__ import annotations

PARAM_BYTES = {"bf16": 2, "fp32": 4}


def predicted_bytes(stage: int, numel: int, dp: int, dtype: str = "bf16",
                    cp: int = 1) -> dict[str, float]:
    """Bytes per rank of parameters, gradients and optimizer state that the paper predicts.
    The shards span the ranks that reduce gradients, DP x CP (N = dp * cp): CP ranks hold
    the same weights and see other tokens, so they are replicas to ZeRO too. Stage 3 adds
    the units gathered at the moment (none between steps)."""
    width, n = PARAM_BYTES[dtype], dp * cp
    optim = (12 if dtype == "bf16" else 8) * numel
    return {"mem_params": width * numel / (n if stage >= 3 else 1),
            "mem_grads": width * numel / (n if stage >= 2 else 1),
            "mem_optim": optim / (n if stage >= 1 else 1)}


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one buffer counted once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        if tensor is not None:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def resident_bytes(buckets, optimizer) -> dict[str, int]:
    """Bytes this rank holds now: parameters (stage 3: the shard and any gathered buckets),
    gradients (full buffers still alive and the shard buffer), optimizer state (moments and
    any separate master weights)."""
    params = storage_bytes(buckets.param_tensors())
    grads = storage_bytes(buckets.grad_tensors())
    optim = storage_bytes(optimizer.state_tensors())
    return {"mem_params": params, "mem_grads": grads, "mem_optim": optim}
