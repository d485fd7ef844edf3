"""The training loop: a global batch per step as micro-batches with gradient accumulation (or
through a pipeline schedule when pp > 1), bucketed DP gradient reduction overlapping each model
chunk's last backward, clipping by the global norm, AdamW (ZeRO stage 0 to 3 over DP),
Megatron's LR schedule and batch ramp-up, validation every `eval_every` steps, and one metrics
record per step."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.distributed as dist

from training.batches import BatchSource, build_batch_sources, prepare_micro_batches
from training.checkpoint import checkpoint_root, resume_latest, save_checkpoint
from training.checkpoint_format import step_dir_name
from training.config import TrainingConfig, padded_vocab_size
from training.evaluation.during_training import TaskEvaluation
from training.init_from import init_weights
from training.metrics import MetricsWriter, step_record
from training.model import GPT, split_layers
from training.moe.metrics import set_backward_scale, take_moe_metrics
from training.optim import LRSchedule, global_batch_size
from training.parallel import comm
from training.parallel.comm import COMM_CLOCK, SOLO
from training.parallel.context import context_slice
from training.parallel.grad_buckets import GradBuckets
from training.parallel.grid import build_grid, destroy_grid
from training.parallel.optimizer import DistributedOptimizer, NonFiniteStepsError
from training.parallel.pipeline import PipelineRuntime
from training.parallel.placement import counts_in_norm, pre_reductions, reduce_groups
from training.parallel.zero3 import ParameterGatherer, layer_units
from training.parallel.zero_memory import resident_bytes
from training.run_messages import RunReport, layout_line


def setup_process() -> None:
    """Per-process CPU settings: denormals flushed (fp32 on CPU is ~2x slower without), and the
    cores shared fairly between the ranks of this machine."""
    torch.set_flush_denormal(True)
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_ranks))


def check_supported(cfg: TrainingConfig) -> None:
    """What the config cannot check on its own (the machine) fails before any work."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda, but torch sees no CUDA device")


class Trainer:
    def __init__(self, cfg: TrainingConfig, sources: tuple[BatchSource, BatchSource] | None = None):
        check_supported(cfg)
        self.cfg = cfg
        p = cfg.parallel
        self.grid = grid = build_grid(p.tp, p.pp, p.dp, cfg.device, cp=p.cp, ep=p.ep, etp=p.etp)
        # Same dropout masks on TP ranks (they hold replicated activations); seeds per stage.
        torch.manual_seed(cfg.train.seed + 100 * grid.pp_rank)
        self.train_source, self.valid_source = sources or build_batch_sources(cfg, grid.rank)
        self.vocab_size = padded_vocab_size(self.train_source.vocab_size, cfg.model.pad_vocab_to)
        if self.vocab_size % p.tp:
            raise ValueError(f"padded vocabulary {self.vocab_size} is not divisible by "
                             f"parallel.tp={p.tp}; raise model.pad_vocab_to")
        self.model = self._build_model()
        # only trained parameters get gradient buckets and optimizer state (frozen: a LoRA base)
        params = [p for p in dict.fromkeys(self.model.parameters()) if p.requires_grad]
        # each gradient is summed, averaged (and with ZeRO sharded) over the groups its
        # placement names: dense weights over DP x CP (CP ranks see other tokens), experts
        # over expert-DP; ZeRO stage 2 shards gradients, stage 3 parameters too
        units, runs = layer_units(self.model) if p.zero == 3 else (None, None)
        self.buckets = GradBuckets(params, grid.group("dp_cp"), dp_rank=grid.dp_cp_rank,
                                   bucket_mb=p.bucket_mb, stage=p.zero,
                                   dtype=torch.bfloat16 if cfg.dtype == "bf16" else torch.float32,
                                   pre_reductions=pre_reductions(params, grid),
                                   reduce_groups=reduce_groups(params, grid),
                                   units=units and [unit.params for unit in units])
        self.gatherer = ParameterGatherer(self.buckets, units, runs) if units else None
        world = dist.group.WORLD if dist.get_world_size() > 1 else SOLO
        sharded = self.buckets.sharded
        # the norm sums the world, each distinct element counted once (parallel/placement.py)
        self.optimizer = DistributedOptimizer(
            self.buckets, cfg.optim, norm_group=world,
            counts_in_norm=lambda param: counts_in_norm(param, grid, sharded))
        self.autocast = (torch.autocast(grid.device.type, dtype=torch.bfloat16)
                         if cfg.dtype == "bf16" else nullcontext())
        self.pipeline = self._build_pipeline()
        self.lr_schedule = LRSchedule(cfg.optim, cfg.batch, cfg.train.steps, cfg.model.seq_len)
        self.consumed_samples = 0
        self.step = 0
        self.skipped_steps, self.skips_in_a_row = 0, 0  # steps with a NaN/Inf loss or norm
        self.writer: MetricsWriter | None = None
        self.task_evaluation = TaskEvaluation(cfg, grid.rank)  # train.eval_tasks_every
        # Continue from the newest complete checkpoint in train.dir/checkpoints, if any.
        self.resumed_from = resume_latest(self)
        # Else, a new run may start from another run's weights (train.init_from).
        self.initialized_from = None
        if self.resumed_from is None and cfg.train.init_from:
            self.initialized_from = init_weights(self, cfg.train.init_from)

    def _build_model(self) -> GPT:
        """This rank's model chunks: chunk c on pipeline rank r is virtual stage c * pp + r."""
        cfg, p, grid = self.cfg, self.cfg.parallel, self.grid
        stages = split_layers(cfg.model.layers, p.pp * p.virtual_stages)
        if grid.rank == 0 and len(stages) > 1:
            even = len({len(r) for r in stages}) == 1
            print(f"pipeline: {layout_line(p, len(stages))}, "
                  f"{'even' if even else 'UNEVEN'} split of {cfg.model.layers} layers: "
                  + ", ".join(f"stage {s} (pp rank {s % p.pp}) blocks {r.start}-{r.stop - 1}"
                              for s, r in enumerate(stages)), flush=True)
        chunks = [stages[c * p.pp + grid.pp_rank] for c in range(p.virtual_stages)]
        return GPT(cfg.model, self.vocab_size, grid, cfg.train.seed, chunks,
                   sequence_parallel=p.sequence_parallel, recompute=p.recompute).to(grid.device)

    def _build_pipeline(self) -> PipelineRuntime | None:
        p, m = self.cfg.parallel, self.cfg.model
        if p.pp == 1:
            return None
        seq = m.seq_len // p.cp  # a CP rank's slice of each sequence
        seq = seq // p.tp if p.sequence_parallel else seq
        return PipelineRuntime(self.model, self.grid, p.schedule, p.virtual_stages,
                               (self.cfg.batch.micro, seq, m.hidden), self.autocast,
                               wire_dtype=torch.bfloat16 if self.cfg.dtype == "bf16"
                               else torch.float32)

    def _mean_over_dp(self, value: torch.Tensor) -> float:
        """The mean over DP x CP: each CP rank's loss is over its slice of the tokens."""
        return comm.all_reduce(value.detach().float().clone(), self.grid.group("dp_cp")).item() \
            / (self.cfg.parallel.dp * self.cfg.parallel.cp)

    def _micro_batches(self, source: BatchSource, consumed: int, global_batch: int):
        batch = source.local_batch(consumed, global_batch, self.grid.dp_rank,
                                   self.cfg.parallel.dp).to(self.grid.device)
        micro_batches = prepare_micro_batches(batch, self.cfg.batch.micro, self.cfg.data,
                                              source.eod_id, dense_mask=self.grid.layout.cp == 1)
        return [context_slice(micro, self.grid) for micro in micro_batches]

    def train_step(self) -> tuple[float, float, int]:
        """One optimizer step on one global batch; returns (loss, grad norm, batch size)."""
        global_batch = global_batch_size(self.consumed_samples, self.cfg.batch)
        micro_batches = self._micro_batches(self.train_source, self.consumed_samples, global_batch)
        self.buckets.zero_grad()
        set_backward_scale(self.model, 1.0 / len(micro_batches))
        if self.pipeline is not None:
            loss_sum = self.pipeline.run(micro_batches, before_last_backward=lambda chunk:
                                         self.buckets.arm(self.model.chunk_parameters(chunk)))
            comm.all_reduce(loss_sum, self.grid.group("pp"))  # the loss is on the last stage
        else:
            loss_sum = torch.zeros((), device=self.grid.device)
            for i, micro in enumerate(micro_batches):
                if i == len(micro_batches) - 1:
                    self.buckets.arm()
                with self.autocast:
                    loss = self.model(micro.inputs, micro.targets, documents=micro.documents)
                (loss / len(micro_batches)).backward()
                loss_sum += loss.detach()
        self.buckets.finish_grad_sync()
        if self.gatherer is not None:
            self.gatherer.release()
        self.on_gradients_reduced()
        self.step += 1
        self.lr = self.lr_schedule.lr(self.step, self.consumed_samples + global_batch)
        loss = self._mean_over_dp(loss_sum / len(micro_batches))
        grad_norm = self.optimizer.step(self.lr, loss)  # skipped if either is NaN/Inf
        self.consumed_samples += global_batch
        return loss, grad_norm, global_batch

    def on_gradients_reduced(self) -> None:
        """Called once the step's gradients are reduced, before clipping and the update (a
        fine-tuning method that reads them, such as GGPO, overrides it)."""

    def checkpoint_extras(self) -> list[tuple[str, list[int], list[int], torch.Tensor]]:
        """Global tensors beyond weights and moments that this rank writes into a checkpoint:
        (key, global shape, offset of its box, values); a fine-tuning method with state of its
        own (GGPO's gradient norms) returns them and reads them back in `load_extras`."""
        return []

    def load_extras(self, reader) -> None:
        """On resume, after the weights: read back what `checkpoint_extras` wrote."""

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean loss over the first `eval_iters` global batches of the validation data."""
        self.model.eval()
        total, count = torch.zeros((), device=self.grid.device), 0
        size = self.cfg.batch.global_batch
        for k in range(self.cfg.train.eval_iters):
            micro_batches = self._micro_batches(self.valid_source, k * size, size)
            count += len(micro_batches)
            if self.pipeline is not None:
                total += self.pipeline.run(micro_batches, train=False)
                continue
            for micro in micro_batches:
                with self.autocast:
                    total += self.model(micro.inputs, micro.targets,
                                        documents=micro.documents).float()
        comm.all_reduce(total, self.grid.group("pp"))
        self.model.train()
        return self._mean_over_dp(total / count)

    def run(self, until: int | None = None,
            on_save: Callable[[Trainer], None] | None = None) -> list[dict]:
        """Train up to step `until` (default `train.steps`) and return the step records.
        `on_save(trainer)` (e.g. `save_checkpoint`) is called every `save_every` steps and
        after the last step of the call, unless that step was just saved."""
        cfg, records = self.cfg, []
        if self.writer is None:
            self.writer = MetricsWriter(cfg.train.dir, enabled=self.grid.rank == 0,
                                        header=getattr(self.train_source, "blend", None))
        sync = torch.cuda.synchronize if self.grid.device.type == "cuda" else (lambda: None)
        while self.step < (until or cfg.train.steps):
            sync()
            COMM_CLOCK.reset()
            start = time.perf_counter()
            loss, grad_norm, global_batch = self.train_step()
            sync()
            record = step_record(
                step=self.step, loss=loss, lr=self.lr, grad_norm=grad_norm,
                consumed_samples=self.consumed_samples, global_batch=global_batch,
                seconds=time.perf_counter() - start, model=cfg.model,
                vocab_size=self.vocab_size, world_size=dist.get_world_size(),
                peak_tflops=cfg.optim.peak_tflops, comm_seconds=COMM_CLOCK.reset())
            record["skipped"] = self._count_skip()
            record.update(take_moe_metrics(self.model, cfg.model, self.grid.device, "train"))
            if not records:  # the run's first step line: what ZeRO left resident on rank 0
                record.update(resident_bytes(self.buckets, self.optimizer))
            if cfg.train.eval_every and self.step % cfg.train.eval_every == 0:
                record["val_loss"] = self.evaluate()
                record["val_ppl"] = math.exp(min(record["val_loss"], 50.0))
                record.update(take_moe_metrics(self.model, cfg.model, self.grid.device, "eval"))
            records.append(record)
            saved = bool(cfg.train.save_every) and self.step % cfg.train.save_every == 0
            task_metrics = {}
            if on_save and saved:
                on_save(self)
                task_metrics = self.task_evaluation.after_save(
                    self.step, checkpoint_root(self) / step_dir_name(self.step))
                record.update(task_metrics)
            if self.step % cfg.train.log_every == 0 or "val_loss" in record or task_metrics:
                self.writer.write(record)
            if self.skips_in_a_row >= cfg.train.max_skipped_steps:
                self._stop_diverged(None if saved else on_save)
        if on_save and cfg.train.save_every and records and self.step % cfg.train.save_every:
            on_save(self)
        return records

    def _count_skip(self) -> bool:
        """Count the step just taken if the optimizer skipped it (and say so on rank 0)."""
        skipped = self.optimizer.last_step_skipped
        self.skips_in_a_row = self.skips_in_a_row + 1 if skipped else 0
        self.skipped_steps += skipped
        if skipped and self.grid.rank == 0:
            print(f"step {self.step}: loss or grad norm is NaN/Inf, update skipped "
                  f"({self.skips_in_a_row} in a row, {self.skipped_steps} in all)", flush=True)
        return skipped

    def _stop_diverged(self, on_save: Callable[[Trainer], None] | None) -> None:
        """train.max_skipped_steps in a row: save (the weights are the last finite ones, the
        step count moves past the bad batches) and stop with the reason."""
        if on_save:
            on_save(self)
        raise NonFiniteStepsError(
            f"stopped at step {self.step}: {self.skips_in_a_row} steps in a row had a NaN/Inf "
            f"loss or gradient norm, each skipped (train.max_skipped_steps="
            f"{self.cfg.train.max_skipped_steps}); the state at step {self.step} is saved if "
            "checkpointing is on. Lower optim.lr or check the data near these steps.")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def run_worker(cfg_dict: dict) -> list[dict]:
    """Entry point of one launched process: train and return this rank's step records."""
    return run_trainer(Trainer, cfg_dict)


def run_trainer(trainer_class: type[Trainer], cfg_dict: dict) -> list[dict]:
    """Build `trainer_class` from the config in this launched process, train, and return this
    rank's step records (shared by `pretrain` and `pretrain finetune`)."""
    setup_process()
    cfg = TrainingConfig.model_validate(cfg_dict)
    trainer = trainer_class(cfg)
    try:
        report = RunReport(trainer)  # a changed LR schedule, or nothing left to do
        records = trainer.run(on_save=save_checkpoint)
        report.finish(records)
        return records
    finally:
        trainer.close()
        destroy_grid()
