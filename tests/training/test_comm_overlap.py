"""Communication on the GPU path and its overlap with compute, on real gloo processes:

- comm refuses a tensor that is not on its group's device (a group claiming NCCL gets a CPU
  tensor: one error naming the op and the group), and no module calls torch.distributed's
  collectives around it;
- with `dtype: bf16` activations and their gradients cross between pipeline stages in bf16;
- DP gradient buckets launch inside the backward with a pipeline and with sequence
  parallelism (order of events, not timing), and those layouts still train the same model as
  one process (fp32, 1e-5);
- a pipeline stage gives up its output once sent, so the activation bytes a rank holds are
  the schedule's in-flight micro-batches times one micro-batch's."""

import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from bench.overlap import memory_trace
from tests.training.test_pipeline_parallel import pipeline_config, train_and_gather, whole_model
from tests.training.test_trainer_equivalence import assert_same_run
from training.config import TrainingConfig
from training.launch import launch
from training.parallel import comm
from training.parallel.grid import build_grid, destroy_grid
from training.parallel.schedule_sim import peak_in_flight
from training.parallel.schedules import Kind, Payload, build_schedule
from training.trainer import Trainer, setup_process

ROOT = Path(__file__).resolve().parents[2]


def test_comm_rejects_a_tensor_off_its_groups_device(monkeypatch):
    grid = build_grid(1, 1, 1)
    try:
        comm.all_reduce(torch.ones(2), dist.group.WORLD)  # gloo carries CPU tensors
        monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
        with pytest.raises(comm.CommDeviceError,
                           match=r"comm\.all_reduce on group 'world' \(nccl\).* is on cpu"):
            comm.all_reduce(torch.ones(2), dist.group.WORLD)
        with pytest.raises(comm.CommDeviceError, match=r"comm\.all_gather_into"):
            comm.all_gather_into(torch.ones(2), torch.ones(2), dist.group.WORLD)
        comm.all_reduce(torch.ones(2), grid.group("dp"))  # a group of one rank: nothing sent
    finally:
        destroy_grid()


def test_every_collective_goes_through_comm():
    """A direct torch.distributed collective would skip comm's device check and clock."""
    direct = re.compile(r"\b(dist|torch\.distributed)\.(all_reduce|all_gather\w*|reduce_scatter"
                        r"\w*|broadcast\w*|barrier|isend|irecv|send|recv|batch_isend_irecv|"
                        r"P2POp)\(")
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for folder in ("training", "bench") for path in (ROOT / folder).rglob("*.py")
                 if path.name != "comm.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if direct.search(line)]
    assert offenders == []


def wire_dtypes(cfg_dict: dict) -> list:
    """Worker: one bf16 step at PP=2; the dtypes of every tensor sent or received."""
    setup_process()
    seen = []
    post = comm.post_p2p

    def recording(sends, recvs, group):
        seen.extend(str(tensor.dtype) for tensor, _ in sends + recvs)
        return post(sends, recvs, group)

    comm.post_p2p = recording
    trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
    records = trainer.run()
    trainer.close()
    destroy_grid()
    return seen, records[-1]["loss"]


def test_bf16_runs_send_bf16_between_stages(tmp_path):
    cfg = pipeline_config(tmp_path, pp=2)
    cfg.update(dtype="bf16")
    cfg["train"].update(steps=1, eval_every=0)
    results = launch(2, wire_dtypes, cfg)
    for seen, loss in results.values():
        assert seen and set(seen) == {"torch.bfloat16"}
        assert torch.isfinite(torch.tensor(loss))


def overlap_events(cfg_dicts: list[dict]) -> list:
    """Worker: train each config recording computes, waits, bucket launches and the start of
    `finish_grad_sync` in order; rank 0 also returns the run and the whole model."""
    setup_process()
    results = []
    for cfg_dict in cfg_dicts:
        trainer = Trainer(TrainingConfig.model_validate(cfg_dict))
        events = []
        trainer.buckets.events = events
        if trainer.pipeline is not None:
            trainer.pipeline.events = events
        finish = trainer.buckets.finish_grad_sync

        def finishing(finish=finish, events=events):
            events.append(("finish",))
            finish()

        trainer.buckets.finish_grad_sync = finishing
        records = trainer.run()
        trainer.close()
        params = whole_model(trainer)
        deferred = [b.index for b in trainer.buckets.buckets
                    if b.pre is not None and not b.pre.in_backward]
        results.append({"events": events[:events.index(("finish",)) + 1], "deferred": deferred,
                        "buckets": len(trainer.buckets.buckets),
                        "run": (records, params) if dist.get_rank() == 0 else None})
    destroy_grid()
    return results


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    (result,) = train_and_gather([pipeline_config(tmp_path_factory.mktemp("ref"))])
    return result


def test_dp_reduction_overlaps_pipeline_and_sequence_parallel_backwards(reference, tmp_path):
    """(1,2,2) under 1F1B and interleaved 1F1B, and (2,1,2) with sequence parallelism: every
    rank launches its buckets (all but the deferred tied-embedding one) before the backward
    ends; with interleaving chunk 1's buckets go before the last backward even starts. A
    pipeline compute waits only for the receive it consumes."""
    configs = [pipeline_config(tmp_path / "a", pp=2, dp=2),
               pipeline_config(tmp_path / "b", pp=2, dp=2, schedule="interleaved", v=2),
               pipeline_config(tmp_path / "c", tp=2, dp=2, sequence_parallel=True)]
    per_rank = launch(4, overlap_events, configs)
    for config, results in enumerate(zip(*(per_rank[r] for r in sorted(per_rank)), strict=True)):
        for rank, result in enumerate(results):
            events = result["events"]
            launched = [e[1] for e in events if e[0] == "launch"]
            assert sorted(launched) == [i for i in range(result["buckets"])
                                        if i not in result["deferred"]], (config, rank)
            # A compute waits for the one receive it consumes, nothing else (no send).
            consumer = {Payload.ACTIVATION: Kind.FORWARD, Payload.GRADIENT: Kind.BACKWARD}
            for i, event in enumerate(events):
                if event[0] == "wait":
                    assert events[i - 1] == ("start", consumer[event[1]], *event[2:]), event
            if config == 1:
                backwards = [i for i, e in enumerate(events)
                             if e[0] == "start" and e[1] is Kind.BACKWARD]
                first_launch = min(i for i, e in enumerate(events) if e[0] == "launch")
                assert first_launch < backwards[-1], rank
        assert_same_run(results[0]["run"], reference)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
def test_activation_memory_follows_in_flight_micro_batches(tmp_path, schedule):
    cfg = pipeline_config(tmp_path, pp=4, schedule=schedule)
    results = launch(4, memory_trace, cfg)
    plan_peaks = peak_in_flight(build_schedule(schedule, 4, results[0]["m"]))
    for result in results.values():
        memory, rank = result["memory"], result["rank"]
        sizes = {live // in_flight for in_flight, live, _ in memory if in_flight}
        assert len(sizes) == 1, (rank, memory)
        per_micro_batch = sizes.pop()
        assert all(live == in_flight * per_micro_batch for in_flight, live, _ in memory), rank
        assert max(in_flight for in_flight, _, _ in memory) == plan_peaks[rank]
        if rank < 3:  # a stage's output keeps at most one element once sent
            assert all(outputs <= 4 * in_flight for in_flight, _, outputs in memory)

