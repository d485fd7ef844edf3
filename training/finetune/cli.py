"""`pretrain finetune CONFIG [--nproc N] [--tp N --pp N --dp N] [--set key=value ...]`,
`pretrain finetune merge CKPT OUT` and `pretrain export-peft ADAPTER OUT`.

The same launcher, layouts, logging and checkpoints as `pretrain CONFIG`; everything the
config, the base checkpoint and the task set can get wrong is reported before any process
starts (training/finetune/setup.py)."""

from __future__ import annotations

import argparse
import sys

import yaml

from training.checkpoint_format import CheckpointError
from training.config import ConfigError, apply_override, resolve_config_path
from training.launch import under_launcher
from training.parallel.grid import GridLayout, LayoutError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pretrain finetune",
        description="LoRA (or LoRA-GGPO, or full) fine-tuning of a checkpoint on a JSONL task "
                    "set. `pretrain finetune merge CKPT OUT` folds the adapters into the base.")
    parser.add_argument("config", help="a shipped config name or a path, with a finetune: "
                        "section")
    parser.add_argument("--nproc", type=int, help="processes to start (default tp * dp * pp)")
    for axis in ("tp", "pp", "dp"):
        parser.add_argument(f"--{axis}", type=int, help=f"shortcut for --set parallel.{axis}=N")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key (repeatable)")
    return parser.parse_args(argv)


def load_finetune_config(config: str, overrides: list[str], labels: dict[str, str]):
    from training.finetune.setup import prepare

    path = resolve_config_path(config)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a training config must be a YAML mapping")
    flags = {}
    for assignment in overrides:
        apply_override(raw, assignment)
        flags[assignment.partition("=")[0].strip()] = labels.get(assignment,
                                                                 f"--set {assignment}")
    return prepare(raw, str(path), flags)


def finetune_main(argv: list[str]) -> int:
    if argv[:1] == ["merge"]:
        return merge_main(argv[1:])
    from training.cli import train
    from training.finetune.trainer import run_finetune_worker
    from training.train_dir_lock import lock_train_dir
    from training.trainer import check_supported

    args = parse_args(argv)
    overrides, labels = list(args.overrides), {}
    for axis in ("tp", "pp", "dp"):
        if getattr(args, axis) is not None:
            overrides.append(f"parallel.{axis}={getattr(args, axis)}")
            labels[overrides[-1]] = f"--{axis} {getattr(args, axis)}"
    try:
        cfg = load_finetune_config(args.config, overrides, labels)
        layout = GridLayout(cfg.parallel.tp, cfg.parallel.pp, cfg.parallel.dp, cfg.parallel.cp)
        if not under_launcher():
            layout.check_world(args.nproc or layout.world_size)
        check_supported(cfg)
        held = lock_train_dir(cfg.train.dir)
    except (ConfigError, LayoutError, CheckpointError, RuntimeError, FileNotFoundError) as err:
        print(f"pretrain finetune: {err}", file=sys.stderr)
        return 2
    with held:
        return train(cfg.dump(), layout.world_size, cfg.train.dir, worker=run_finetune_worker)


def merge_main(argv: list[str]) -> int:
    from training.finetune.merge import merge

    parser = argparse.ArgumentParser(
        prog="pretrain finetune merge",
        description="Write a full checkpoint with W + (alpha / r) B A for every adapter.")
    parser.add_argument("checkpoint", help="a fine-tuning checkpoint (or its run folder)")
    parser.add_argument("out", help="the checkpoint folder to write")
    args = parser.parse_args(argv)
    try:
        out = merge(args.checkpoint, args.out)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"pretrain finetune merge: {err}", file=sys.stderr)
        return 2
    print(f"wrote the merged checkpoint {out}")
    return 0


def export_peft_main(argv: list[str]) -> int:
    from training.finetune.export_peft import export_peft

    parser = argparse.ArgumentParser(
        prog="pretrain export-peft",
        description="Write a LoRA checkpoint's adapters as a PEFT folder (adapter_config.json, "
                    "adapter_model.safetensors) for the `pretrain export-hf` of its base.")
    parser.add_argument("adapter", help="a LoRA fine-tuning checkpoint (or its run folder)")
    parser.add_argument("out", help="folder to write")
    args = parser.parse_args(argv)
    try:
        files = export_peft(args.adapter, args.out)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"pretrain export-peft: {err}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(f.name for f in files)} to {args.out}")
    return 0
