"""Before any fine-tuning process starts: the base checkpoint found and matched against the
config, the LoRA targets and rank checked against the model, the task set read and tokenized
(a bad line is named), and what the config leaves out filled in from the base run (`model`,
`data`) and from the task set (`train.steps` from `finetune.epochs`, `train.eval_iters` to
cover the held-out examples). Every problem is one `ConfigError` naming its key."""

from __future__ import annotations

import copy
import math
from pathlib import Path

from training.checkpoint_format import CheckpointError, read_index
from training.config import ConfigError, ModelConfig, TrainingConfig, parse_config

# Model keys that do not change the weights' shapes or meaning (a fine-tune may change them).
FREE_MODEL_KEYS = {"dropout", "init_std"}


def base_checkpoint(path: str | Path) -> Path:
    from training.init_from import resolve

    try:
        return resolve(path)
    except CheckpointError as err:
        raise ConfigError(str(err).replace("train.init_from", "finetune.init_from")) from None


def base_config(path: str | Path) -> tuple[Path, dict]:
    ckpt = base_checkpoint(path)
    return ckpt, read_index(ckpt)


def task_tokenizer(cfg: TrainingConfig) -> Path:
    """finetune.data.tokenizer, or the base run's curated tokenizer.json."""
    if cfg.finetune.data.tokenizer:
        return Path(cfg.finetune.data.tokenizer)
    from training.export_hf import find_tokenizer

    ckpt, index = base_config(cfg.finetune.init_from)
    base = TrainingConfig.model_validate(index["config"])
    found = find_tokenizer(base) if not base.data.is_synthetic else None
    if found is None:
        raise ConfigError(f"finetune.data.tokenizer: the base run {ckpt} trained on synthetic "
                          "data (no tokenizer): give a tokenizer.json")
    return found


def architecture_problems(mine: ModelConfig, base: ModelConfig, ckpt: Path) -> list[str]:
    ours, theirs = mine.model_dump(), base.model_dump()
    differ = [f"model.{key} {ours[key]} (checkpoint: {theirs[key]})" for key in ours
              if key not in FREE_MODEL_KEYS and ours[key] != theirs[key]]
    if not differ:
        return []
    return [f"finetune.init_from: {ckpt} is a checkpoint of another architecture than this "
            f"config's model: {', '.join(differ)} (leave `model:` out to take the checkpoint's)"]


def prepare(raw: dict, source: str, flags: dict[str, str]) -> TrainingConfig:
    """The validated fine-tuning config, with the defaults above filled in."""
    from training.finetune.data import TaskDataError, encode, load_tokenizer, read_examples, split
    from training.finetune.lora import lora_problems

    raw = copy.deepcopy(raw)
    section = raw.get("finetune")
    if not isinstance(section, dict) or "init_from" not in section:
        raise ConfigError(f"{source}: pretrain finetune needs a finetune: section with "
                          "init_from (the base checkpoint)")
    ckpt, index = base_config(section["init_from"])
    saved = index["config"]
    raw.setdefault("model", copy.deepcopy(saved["model"]))
    raw.setdefault("data", copy.deepcopy(saved.get("data", {})))
    train = raw.setdefault("train", {})
    steps_given, eval_iters_given = "steps" in train, "eval_iters" in train
    train.setdefault("steps", 1)  # replaced below from the epochs
    cfg = parse_config(raw, source, flags)
    problems = architecture_problems(cfg.model, ModelConfig.model_validate(saved["model"]),
                                     ckpt)
    if cfg.finetune.lora is not None:
        problems += lora_problems(cfg.model, cfg.finetune.lora)
    if cfg.parallel.zero == 3:
        problems.append("parallel.zero: 3 is not supported by pretrain finetune yet (its layer "
                        "units would gather frozen base weights the buckets do not hold); use "
                        "parallel.zero: 1 or 2 (optimizer state is the adapters' only anyway)")
    if cfg.parallel.cp > 1:
        problems.append("parallel.cp > 1 is not supported by pretrain finetune (loss masks "
                        "are not cut into CP slices)")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))
    try:
        tokenizer, eod = load_tokenizer(task_tokenizer(cfg))
        if tokenizer.get_vocab_size() > index["data_vocab_size"]:
            raise ConfigError(f"finetune.data.tokenizer: {tokenizer.get_vocab_size()} tokens, "
                              f"more than the base model's {index['data_vocab_size']}")
        task = encode(read_examples(cfg.finetune.data), tokenizer, eod, cfg.model.seq_len)
        n_train, n_held = (len(ids) for ids in split(len(task.tokens), cfg.finetune.eval_fraction,
                                                      cfg.train.seed))
    except (TaskDataError, OSError) as err:
        raise ConfigError(str(err)) from None
    global_batch = cfg.batch.global_batch
    if not steps_given:
        train["steps"] = max(1, math.ceil(cfg.finetune.epochs * n_train / global_batch))
    if n_held and not eval_iters_given:
        train["eval_iters"] = math.ceil(n_held / global_batch)
    cfg = parse_config(raw, source, flags)
    if task.truncated:
        print(f"pretrain finetune: {task.truncated} of {len(task.tokens)} examples are longer "
              f"than model.seq_len + 1 ({cfg.model.seq_len + 1} tokens) and were cut",
              flush=True)
    return cfg
