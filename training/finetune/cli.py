"""`pretrain finetune CONFIG [--nproc N] [--tp N --pp N --dp N] [--set key=value ...]`,
`pretrain finetune merge CKPT OUT` and `pretrain export-peft ADAPTER OUT`.

The same launcher, layouts, logging and checkpoints as `pretrain CONFIG`; everything the
config, the base checkpoint and the task set can get wrong is reported before any process
starts (training/finetune/setup.py)."""

from __future__ import annotations

import argparse
import sys

from training.checkpoint_format import CheckpointError
from training.config import ConfigError, load_raw_config
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

    raw, path, flags = load_raw_config(config, overrides, labels)
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


def _two_path_command(argv: list[str], prog: str, description: str,
                      first: tuple[str, str], action) -> int:
    """Parse `prog SOURCE OUT` (`first`: SOURCE's name and help), run `action(source, out)`
    (which returns the line to print), and report what it refuses as one line, status 2."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("source", metavar=first[0], help=first[1])
    parser.add_argument("out", help="folder to write")
    args = parser.parse_args(argv)
    try:
        done = action(args.source, args.out)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    print(done)
    return 0


def merge_main(argv: list[str]) -> int:
    from training.finetune.merge import merge

    return _two_path_command(
        argv, "pretrain finetune merge",
        "Write a full checkpoint with W + (alpha / r) B A for every adapter.",
        ("checkpoint", "a fine-tuning checkpoint (or its run folder)"),
        lambda source, out: f"wrote the merged checkpoint {merge(source, out)}")


def export_peft_main(argv: list[str]) -> int:
    from training.finetune.export_peft import export_peft

    def export(source, out):
        files = export_peft(source, out)
        return f"wrote {', '.join(f.name for f in files)} to {out}"

    return _two_path_command(
        argv, "pretrain export-peft",
        "Write a LoRA checkpoint's adapters as a PEFT folder (adapter_config.json, "
        "adapter_model.safetensors) for the `pretrain export-hf` of its base.",
        ("adapter", "a LoRA fine-tuning checkpoint (or its run folder)"), export)
