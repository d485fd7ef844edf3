"""Sequence parallelism (Megatron, 2022): the residual stream is sharded along the sequence
over TP, the two SP collectives are each other's transpose, and training at TP=2 with it is
the same run as one process (fp32, 1e-5). Real processes on gloo."""

import torch
import torch.distributed as dist

from tests.training.test_pipeline_parallel import pipeline_config, train_and_gather
from tests.training.test_trainer_equivalence import assert_same_run
from training.config import TrainingConfig
from training.launch import launch
from training.model import GPT
from training.parallel.grid import build_grid, destroy_grid
from training.parallel.placement import placement
from training.parallel.tensor import (
    gather_from_sequence_parallel,
    reduce_scatter_to_sequence_parallel,
)
from training.trainer import setup_process


def collectives_and_shapes() -> dict:
    """Worker at TP=2: the SP functions against their definitions, and the shapes a block sees."""
    setup_process()
    grid = build_grid(2, 1, 1)
    group, rank = grid.group("tp"), grid.tp_rank
    torch.manual_seed(0)  # the same full tensors on both ranks
    full = torch.randn(3, 8, 5)
    upstream = torch.randn(2, 3, 8, 5)  # a different output gradient per rank
    shard = full[:, 4 * rank: 4 * rank + 4].clone().requires_grad_()
    gathered = gather_from_sequence_parallel(shard, group)
    (gathered * upstream[rank]).sum().backward()
    partial = (full * (rank + 1)).requires_grad_()
    scattered = reduce_scatter_to_sequence_parallel(partial, group)
    (scattered * upstream[rank][:, :4]).sum().backward()

    cfg = TrainingConfig.model_validate(pipeline_config("unused", tp=2, sequence_parallel=True))
    model = GPT(cfg.model, 64, grid, seed=7, sequence_parallel=True)
    shapes = []
    model.blocks["0"].register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    tokens = torch.randint(0, 60, (2, 17))
    loss = model(tokens[:, :-1], tokens[:, 1:])
    marked = sorted(n for n, p in model.named_parameters() if placement(p).grad_sum == "tp")
    checks = {
        "gathered": torch.equal(gathered, full),
        # backward of all-gather = reduce-scatter: the sum of both ranks' upstream, my shard
        "gather_grad": torch.allclose(shard.grad, upstream.sum(0)[:, 4 * rank: 4 * rank + 4]),
        "scattered": torch.allclose(scattered, (full * 3)[:, 4 * rank: 4 * rank + 4]),
        # backward of reduce-scatter = all-gather of the shard gradients
        "scatter_grad": torch.allclose(partial.grad, torch.cat(
            [upstream[0][:, :4], upstream[1][:, :4]], dim=1)),
        "block_output": shapes[0], "loss_finite": bool(torch.isfinite(loss)), "marked": marked,
    }
    dist.barrier()
    destroy_grid()
    return checks


def test_collectives_are_conjugate_and_the_stream_is_sharded():
    for checks in launch(2, collectives_and_shapes).values():
        assert checks["gathered"] and checks["gather_grad"]
        assert checks["scattered"] and checks["scatter_grad"]
        assert checks["block_output"] == (2, 8, 32)  # seq 16 over TP=2
        assert checks["loss_finite"]
        # LayerNorms, row-parallel biases and positions see one shard: reduced over TP.
        assert "blocks.0.ln1.weight" in checks["marked"]
        assert "blocks.0.attn.proj.bias" in checks["marked"]
        assert "embedding.position" in checks["marked"]
        assert "blocks.0.attn.qkv.weight" not in checks["marked"]


def test_sequence_parallel_at_tp2_equals_one_process(tmp_path):
    (reference,) = train_and_gather([pipeline_config(tmp_path / "ref")])
    configs = [pipeline_config(tmp_path / "sp", tp=2, sequence_parallel=True),
               pipeline_config(tmp_path / "sp_full", tp=2, sequence_parallel=True,
                               recompute="full")]
    for result in launch(2, train_and_gather, configs)[0]:
        assert_same_run(result, reference)
