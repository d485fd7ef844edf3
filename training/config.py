"""The training config: the YAML of DESIGN.md as strict pydantic models.

Unknown keys and impossible combinations are errors that name the YAML path, raised before any
process starts, so a typo in a 530B config fails in a second rather than after the launch.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from curation.config import StrictModel
from training.architecture import (
    apply_preset,
    default_ffn,
    model_problems,
    tensor_parallel_problems,
)
from training.config_messages import describe
from training.finetune.config import FinetuneConfig
from training.moe.config import MoEConfig, moe_problems

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(ValueError):
    """A config that cannot run; the message lists every problem with its YAML path."""


class ModelConfig(StrictModel):
    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    seq_len: int = Field(gt=0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    ffn_hidden: int | None = Field(None, gt=0, description="default 4 * hidden")
    vocab_size: int | None = Field(
        None, gt=0, description="synthetic data's vocabulary; curated data brings its own")
    pad_vocab_to: int = Field(128, gt=0, description="vocab rounded up to a multiple of this")
    init_std: float = Field(0.02, gt=0.0)
    # The block's architecture (training/architecture.py): `arch` presets the group below.
    arch: Literal["gpt2", "llama"] = "gpt2"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    position: Literal["learned", "rope"] = "learned"
    rope_theta: float = Field(10000.0, gt=0.0)
    mlp: Literal["gelu", "swiglu"] = "gelu"
    kv_heads: int | None = Field(None, gt=0, description="default heads (multi-head)")
    tie_embeddings: bool = True
    bias: bool = True
    moe: MoEConfig | None = Field(None, description="mixture of experts (training/moe)")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, raw):
        return apply_preset(raw)

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelConfig:
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        problems = model_problems(self.heads, self.kv, self.hidden // self.heads, self.position)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def ffn(self) -> int:
        return self.ffn_hidden or default_ffn(self.hidden, self.mlp)

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads


def padded_vocab_size(vocab_size: int, pad_to: int) -> int:
    """Megatron pads the vocabulary so it splits evenly; the padding is independent of TP so a
    model is the same function at every TP (the padded rows are never targets)."""
    return math.ceil(vocab_size / pad_to) * pad_to


class ParallelConfig(StrictModel):
    tp: int = Field(1, gt=0)
    pp: int = Field(1, gt=0)
    dp: int = Field(1, gt=0)
    cp: int = Field(1, gt=0, description="context parallelism: ranks sharing each sequence")
    ep: int = Field(1, gt=0, description="expert parallelism: ranks the experts are split over")
    etp: int = Field(1, gt=0, description="expert tensor parallelism: ranks splitting each expert")
    virtual_stages: int = Field(1, gt=0)
    schedule: Literal["gpipe", "1f1b", "interleaved"] = "1f1b"
    sequence_parallel: bool = False
    recompute: Literal["none", "full", "selective"] = "none"
    zero: Literal[0, 1, 2, 3] = Field(
        1, description="ZeRO stage: 1 shards optimizer state over DP, 2 gradients too, "
                       "3 parameters too")
    bucket_mb: float = Field(25.0, gt=0.0, description="gradient reduction bucket size")

    @model_validator(mode="before")
    @classmethod
    def _zero1_is_zero(cls, data):
        """`zero1: true/false` (before stages 2-3 existed) still means `zero: 1/0`."""
        if not isinstance(data, dict) or "zero1" not in data:
            return data
        data = dict(data)
        zero1 = data.pop("zero1")
        if not isinstance(zero1, bool):
            raise ValueError(f"parallel.zero1 (deprecated) must be true or false, got {zero1!r}")
        if "zero" in data and data["zero"] != int(zero1):
            raise ValueError(f"parallel.zero1={str(zero1).lower()} (deprecated) contradicts "
                             f"parallel.zero={data['zero']}: drop zero1")
        warnings.warn(f"parallel.zero1 is deprecated: write parallel.zero: {int(zero1)}",
                      DeprecationWarning, stacklevel=2)
        data["zero"] = int(zero1)
        return data

    @property
    def world_size(self) -> int:
        return self.tp * self.cp * self.dp * self.pp


class BatchConfig(StrictModel):
    micro: int = Field(gt=0)
    global_batch: int = Field(alias="global", gt=0)
    rampup: tuple[int, int, int] | None = Field(
        None, description="[start, increment, samples] as Megatron's --rampup-batch-size"
    )


class OptimConfig(StrictModel):
    lr: float = Field(gt=0.0)
    min_lr: float = Field(0.0, ge=0.0)
    schedule_unit: Literal["steps", "samples", "tokens"] = Field(
        "steps", description="what warmup and decay count (samples or tokens with ramp-up)")
    warmup: int = Field(0, ge=0, description="linear warmup, in schedule_unit")
    decay: int | None = Field(
        None, gt=0, description="end of the cosine decay, in schedule_unit; default the run")
    weight_decay: float = Field(0.0, ge=0.0)
    clip: float = Field(1.0, ge=0.0, description="global gradient norm; 0 disables")
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)
    peak_tflops: float | None = Field(None, gt=0.0, description="per-device peak, for MFU")

    @model_validator(mode="before")
    @classmethod
    def _renamed_decay_steps(cls, raw):
        """`decay_steps` (before schedule_unit) still works, as `decay` counted in steps."""
        if isinstance(raw, dict) and "decay_steps" in raw:
            raw = dict(raw)
            if raw["decay_steps"] is None:  # the old default, as saved in old checkpoints
                raw.pop("decay_steps")
                return raw
            if raw.get("decay") is not None or raw.get("schedule_unit", "steps") != "steps":
                raise ValueError("decay_steps is renamed decay (counted in schedule_unit): "
                                 "give decay only")
            warnings.warn("optim.decay_steps is deprecated: write optim.decay (counted in "
                          "optim.schedule_unit, default steps)", FutureWarning, stacklevel=2)
            raw["decay"] = raw.pop("decay_steps")
        return raw

    @model_validator(mode="after")
    def _warmup_before_decay(self) -> OptimConfig:
        if self.decay is not None and self.warmup > self.decay:
            raise ValueError(f"warmup ({self.warmup}) must not exceed decay ({self.decay})")
        return self


class TrainConfig(StrictModel):
    steps: int = Field(gt=0)
    eval_every: int = Field(0, ge=0, description="0 disables validation")
    eval_iters: int = Field(2, gt=0, description="global batches per validation")
    save_every: int = Field(0, ge=0, description="0 disables checkpoints")
    keep_last: int = Field(3, gt=0, description="newest checkpoints kept in dir/checkpoints")
    log_every: int = Field(1, gt=0)
    max_skipped_steps: int = Field(
        10, gt=0, description="steps in a row with a NaN/Inf loss or grad norm (each skipped) "
        "before training stops with a checkpoint")
    dir: str = "runs/default"
    seed: int = 1234
    init_from: str | None = Field(
        None, description="a checkpoint (or run folder) whose weights a new run starts from, "
        "with a fresh optimizer, schedule and data; ignored once the run has checkpoints")
    eval_tasks_every: int = Field(
        0, ge=0, description="0 disables; else rank 0 runs `pretrain eval` on the checkpoint "
        "of every such step (a multiple of save_every), logging accuracies to metrics.jsonl")
    eval_tasks: list[str] = Field([], description="task names for eval_tasks_every")
    eval_shots: str = Field("0", description="shot counts for eval_tasks_every, e.g. 0,1,few")

    @model_validator(mode="after")
    def _task_evaluation(self) -> TrainConfig:
        from training.evaluation.harness import parse_shots

        parse_shots(self.eval_shots, where="eval_shots")
        every = self.eval_tasks_every
        if every and not self.eval_tasks:
            raise ValueError(f"eval_tasks_every is {every} but eval_tasks is empty")
        if every and (not self.save_every or every % self.save_every):
            raise ValueError(f"eval_tasks_every ({every}) must be a multiple of save_every "
                             f"({self.save_every}): the evaluation reads that step's checkpoint")
        return self


class DataConfig(StrictModel):
    curated: str | None = Field(None, description="a `curate run` OUT directory")
    synthetic: bool = False
    seq_len: int | None = Field(None, gt=0, description="if given, must equal model.seq_len")
    reset_position_ids: bool = Field(
        False, description="positions restart after each EOD (Megatron --reset-position-ids)")
    reset_attention_mask: bool = Field(
        False, description="attention stays within each document of a packed sample")
    eod_mask_loss: bool = Field(False, description="no loss on predicting from an EOD token")
    empty_sources: Literal["skip", "error"] = Field(
        "skip", description="a blend source without token shards: skip it (renormalising the "
        "others, with a warning) or stop")

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.synthetic and self.curated:
            raise ValueError("choose one of data.curated and data.synthetic, not both")
        return self

    @property
    def is_synthetic(self) -> bool:
        return self.synthetic or self.curated is None


class TrainingConfig(StrictModel):
    model: ModelConfig
    parallel: ParallelConfig = ParallelConfig()
    batch: BatchConfig
    optim: OptimConfig
    train: TrainConfig
    data: DataConfig = DataConfig()
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["fp32", "bf16"] = "fp32"
    finetune: FinetuneConfig | None = None  # `pretrain finetune` (training/finetune/)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingConfig:
        problems = []
        m, p, b = self.model, self.parallel, self.batch
        if m.heads % p.tp:
            problems.append(f"model.heads ({m.heads}) must be divisible by parallel.tp ({p.tp})")
        problems += tensor_parallel_problems(m.heads, m.kv, p.tp)
        if m.ffn % p.tp:
            problems.append(f"model.ffn_hidden ({m.ffn}) must be divisible by parallel.tp ({p.tp})")
        if m.vocab_size and padded_vocab_size(m.vocab_size, m.pad_vocab_to) % p.tp:
            problems.append(
                f"padded vocabulary ({padded_vocab_size(m.vocab_size, m.pad_vocab_to)}) must be "
                f"divisible by parallel.tp ({p.tp}); raise model.pad_vocab_to"
            )
        per_step = b.micro * p.dp
        if b.global_batch % per_step:
            problems.append(
                f"batch.global ({b.global_batch}) must be a multiple of batch.micro * parallel.dp "
                f"({b.micro} * {p.dp})"
            )
        if b.rampup:
            start, increment, _ = b.rampup
            if start % per_step or increment % per_step:
                problems.append(f"batch.rampup start and increment must be multiples of {per_step}")
            if start > b.global_batch or (b.global_batch - start) % max(increment, 1):
                problems.append("batch.rampup must reach batch.global in whole increments")
            if self.optim.schedule_unit == "steps":
                problems.append(
                    "optim.schedule_unit is steps but batch.rampup grows the batch, so a step "
                    "is no fixed amount of data: set optim.schedule_unit to samples or tokens "
                    "and give optim.warmup and optim.decay in that unit (as Megatron's "
                    "--lr-warmup-samples / --lr-decay-samples)")
        problems += pipeline_problems(m, p, b) + context_problems(m, p)
        problems += moe_problems(m.moe, m.mlp, p, b.micro, m.seq_len)
        if p.zero == 3 and p.pp > 1:
            problems.append(
                "parallel.zero: 3 with parallel.pp > 1 is not supported: a pipeline runs each "
                "layer's forward and backward once per micro-batch, interleaved with other "
                "micro-batches, so every layer would be all-gathered twice per micro-batch "
                "(as DeepSpeed, which also refuses it); use parallel.zero: 1 or 2 with a "
                "pipeline, or zero 3 with parallel.pp: 1")
        if p.sequence_parallel and m.seq_len % p.tp:
            problems.append(f"parallel.sequence_parallel shards model.seq_len ({m.seq_len}) over "
                            f"parallel.tp ({p.tp}): it must be divisible")
        if self.data.is_synthetic and m.vocab_size is None:
            problems.append("model.vocab_size is required when data is synthetic")
        kept_apart = [f"data.{key}" for key in ("reset_position_ids", "reset_attention_mask",
                                                "eod_mask_loss") if getattr(self.data, key)]
        if kept_apart and self.data.is_synthetic:
            problems.append(f"{', '.join(kept_apart)} need documents: set data.curated (synthetic "
                            "samples have no EOD tokens)")
        if self.data.seq_len and self.data.seq_len != m.seq_len:
            problems.append(f"data.seq_len ({self.data.seq_len}) != model.seq_len ({m.seq_len})")
        if self.optim.min_lr > self.optim.lr:
            problems.append("optim.min_lr must not exceed optim.lr")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def dump(self) -> dict:
        return self.model_dump(by_alias=True)


def pipeline_problems(m: ModelConfig, p: ParallelConfig, b: BatchConfig) -> list[str]:
    """What a pipeline schedule cannot run: found here, before any process starts."""
    problems, stages = [], p.pp * p.virtual_stages
    if p.virtual_stages > 1 and p.schedule != "interleaved":
        problems.append(f"parallel.virtual_stages ({p.virtual_stages}) > 1 needs "
                        f"parallel.schedule: interleaved (got {p.schedule})")
    if p.schedule == "interleaved" and p.pp > 1:
        if p.virtual_stages < 2:
            problems.append("parallel.schedule interleaved needs parallel.virtual_stages >= 2")
        if m.layers % stages:
            problems.append(f"model.layers ({m.layers}) must be divisible by parallel.pp * "
                            f"parallel.virtual_stages ({p.pp} * {p.virtual_stages}) for the "
                            "interleaved schedule")
        per_micro = b.micro * p.dp
        sizes = {b.global_batch} | ({b.rampup[0] + k * b.rampup[1] for k in range(
            (b.global_batch - b.rampup[0]) // max(b.rampup[1], 1) + 1)} if b.rampup else set())
        for size in sorted(sizes):
            if size % per_micro == 0 and (size // per_micro) % p.pp:
                problems.append(
                    f"the interleaved schedule needs the micro-batches per step (batch size "
                    f"{size} / (batch.micro * parallel.dp) = {size // per_micro}) to be a "
                    f"multiple of parallel.pp ({p.pp})")
                break
    elif p.schedule == "interleaved" and p.virtual_stages > 1:
        problems.append("parallel.schedule interleaved needs parallel.pp >= 2 (virtual stages "
                        "of one rank would hold both copies of the tied embedding)")
    if m.layers < stages:
        problems.append(f"model.layers ({m.layers}) is fewer than the pipeline stages "
                        f"(parallel.pp * parallel.virtual_stages = {stages})")
    return problems


def context_problems(m: ModelConfig, p: ParallelConfig) -> list[str]:
    """What context parallelism (training/parallel/context.py) cannot run."""
    if p.cp == 1:
        return []
    problems = []
    if m.seq_len % (2 * p.cp):
        problems.append(f"parallel.cp ({p.cp}) cuts model.seq_len ({m.seq_len}) into 2 * cp "
                        "chunks: it must be divisible by 2 * parallel.cp")
    elif p.sequence_parallel and (m.seq_len // p.cp) % p.tp:
        problems.append(f"parallel.sequence_parallel shards each CP rank's {m.seq_len // p.cp} "
                        f"tokens over parallel.tp ({p.tp}): it must be divisible")
    return problems


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path to a YAML file, or the name of a shipped config (`tiny`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"no config file {str(name_or_path)!r} and no shipped config of that name "
                      f"(shipped: {names})")


def apply_override(raw: dict, assignment: str) -> None:
    """Apply `a.b.c=value` in place; the value is parsed as YAML (`2`, `true`, `[1, 2]`)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    *parents, leaf = key.strip().split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            section = ".".join(parents[: i + 1])
            raise ConfigError(f"--set {assignment!r}: {section} is not a section")
        node = child
    try:
        node[leaf] = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {assignment!r}: the value is not valid YAML ({err})") from None


def parse_config(raw: dict, source: str = "<config>",
                 flags: dict[str, str] | None = None) -> TrainingConfig:
    """Validate `raw`; `flags` maps key paths set on the command line to their flag, so
    their problems name the flag (training/config_messages.py)."""
    try:
        return TrainingConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe(err, TrainingConfig, source, flags or {})) from None


def load_raw_config(name_or_path: str | Path, overrides: list[str] = (),
                    labels: dict[str, str] | None = None) -> tuple[dict, Path, dict[str, str]]:
    """The config file's mapping with `overrides` (`key.path=value`) applied, its path, and the
    flag of each overridden key path; `labels` names an override's flag in messages (default
    `--set key.path=value`). Shared by `pretrain` and `pretrain finetune`."""
    path = resolve_config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a training config must be a YAML mapping")
    flags = {}
    for assignment in overrides:
        apply_override(raw, assignment)
        label = (labels or {}).get(assignment, f"--set {assignment}")
        flags[assignment.partition("=")[0].strip()] = label
    return raw, path, flags


def load_config(name_or_path: str | Path, overrides: list[str] = (),
                labels: dict[str, str] | None = None) -> TrainingConfig:
    """The config file with `overrides` applied and validated (see `load_raw_config`)."""
    raw, path, flags = load_raw_config(name_or_path, overrides, labels)
    return parse_config(raw, str(path), flags)
