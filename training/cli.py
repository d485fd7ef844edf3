"""`pretrain CONFIG [--nproc N] [--tp N --pp N --dp N] [--set key=value ...]`,
`pretrain export-hf CHECKPOINT OUT [--tokenizer PATH]` and `pretrain eval CKPT --tasks ...`.

Under torchrun the process is one rank of the launcher's world. Run bare, it starts `--nproc`
processes (default TP x PP x DP) itself through torch's elastic launcher; a world of one runs
in this process. The config is validated, and the layout checked against the world size,
before any process starts.
"""

from __future__ import annotations

import argparse
import os
import sys

from curation.tasks.registry import TaskError
from training.batches import check_data_sources
from training.config import ConfigError, load_config
from training.data.shards import ShardError
from training.evaluation.during_training import check_eval_tasks
from training.launch import launch, under_launcher
from training.parallel.grid import GridLayout, LayoutError
from training.preflight import PreflightError, check_curated
from training.rank_failures import (
    DEBUG_ENV,
    INTERRUPTED_EXIT,
    Interrupted,
    RankFailure,
    launch_reporting,
    run_reporting,
)
from training.run_messages import remove_partial_checkpoints
from training.train_dir_lock import lock_train_dir
from training.trainer import check_supported, run_worker

INTERRUPTED = "interrupted; rerun the same command to resume"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    commands = "\n".join(f"  pretrain {name:<10} {about}"
                          for name, (_, about) in SUBCOMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="pretrain", description="Pretrain a GPT.",
        epilog=f"sub-commands (each takes --help):\n{commands}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="a shipped config name (tiny, gpt_125m, ...) or a path")
    parser.add_argument("--nproc", type=int, help="processes to start (default tp * cp * dp * pp)")
    parser.add_argument("--tp", type=int, help="shortcut for --set parallel.tp=N")
    parser.add_argument("--pp", type=int, help="shortcut for --set parallel.pp=N")
    parser.add_argument("--dp", type=int, help="shortcut for --set parallel.dp=N")
    parser.add_argument("--cp", type=int, help="shortcut for --set parallel.cp=N")
    parser.add_argument("--ep", type=int, help="shortcut for --set parallel.ep=N")
    parser.add_argument("--etp", type=int, help="shortcut for --set parallel.etp=N")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a config key (repeatable)")
    parser.add_argument("--debug", action="store_true",
                        help=f"full tracebacks from failing ranks (or {DEBUG_ENV}=1)")
    return parser.parse_args(argv)


def export_main(argv: list[str]) -> int:
    from training.checkpoint_format import CheckpointError
    from training.export_hf import export_hf

    parser = argparse.ArgumentParser(
        prog="pretrain export-hf",
        description="Export a checkpoint as a Hugging Face GPT-2 or Llama.")
    parser.add_argument("checkpoint", help="a step folder, or a run / checkpoints folder "
                        "(its `latest` checkpoint)")
    parser.add_argument("out", help="folder to write config.json, model.safetensors, tokenizer")
    parser.add_argument("--tokenizer", help="tokenizer.json (default: the run's data.curated)")
    args = parser.parse_args(argv)
    try:
        files = export_hf(args.checkpoint, args.out, args.tokenizer)
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        print(f"pretrain export-hf: {err}", file=sys.stderr)
        return 2
    if not any(f.name == "tokenizer.json" for f in files):
        print("pretrain export-hf: synthetic-data run, no tokenizer files written",
              file=sys.stderr)
    print(f"wrote {', '.join(f.name for f in files)} to {args.out}")
    return 0


def eval_main(argv: list[str]) -> int:
    from training.evaluation.cli import eval_main as run_eval

    return run_eval(argv)


def finetune_main(argv: list[str]) -> int:
    from training.finetune.cli import finetune_main as run

    return run(argv)


def export_peft_main(argv: list[str]) -> int:
    from training.finetune.cli import export_peft_main as run

    return run(argv)


SUBCOMMANDS = {
    "export-hf": (export_main,
                  "CHECKPOINT OUT: a Hugging Face folder (GPT-2 or Llama) of a checkpoint"),
    "eval": (eval_main, "CKPT --tasks TASK...: zero/one/few-shot accuracy (lm-eval, offline)"),
    "finetune": (finetune_main, "CONFIG: LoRA / LoRA-GGPO fine-tuning; `finetune merge CKPT "
                 "OUT` merges"),
    "export-peft": (export_peft_main, "ADAPTER OUT: a LoRA checkpoint as a PEFT adapter folder"),
}


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # before or after the ranks (during them, `train` handles it)
        print(f"pretrain: {INTERRUPTED}", file=sys.stderr)
        return INTERRUPTED_EXIT


def _main(argv: list[str]) -> int:
    if argv[:1] and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]][0](argv[1:])
    args = parse_args(argv)
    if args.debug:
        os.environ[DEBUG_ENV] = "1"  # the ranks inherit it
    overrides, labels = list(args.overrides), {}
    for axis in ("tp", "pp", "dp", "cp", "ep", "etp"):
        if getattr(args, axis) is not None:
            overrides.append(f"parallel.{axis}={getattr(args, axis)}")
            labels[overrides[-1]] = f"--{axis} {getattr(args, axis)}"
    try:
        cfg = load_config(args.config, overrides, labels)
        if cfg.finetune is not None:
            raise ConfigError(f"{args.config}: a finetune: section is run by `pretrain "
                              f"finetune {args.config}`")
        p = cfg.parallel
        layout = GridLayout(p.tp, p.pp, p.dp, p.cp, p.ep, p.etp)
        if not under_launcher():
            layout.check_world(args.nproc or layout.world_size)
        check_supported(cfg)
        if not cfg.data.is_synthetic:
            check_curated(cfg.data.curated)
            check_data_sources(cfg)
        check_eval_tasks(cfg)
        held = lock_train_dir(cfg.train.dir)  # LockHeld is a RuntimeError: one line
    except (ConfigError, LayoutError, PreflightError, RuntimeError, ShardError,
            TaskError) as err:
        print(f"pretrain: {err}", file=sys.stderr)
        return 2
    with held:
        return train(cfg.dump(), layout.world_size, cfg.train.dir)


def train(cfg_dict: dict, world_size: int, run_dir: str, worker=run_worker) -> int:
    """Run the ranks here (a world of one, or one rank under torchrun) or start them; a
    failure is the root cause's one line, Ctrl-C one line and no half-written checkpoint."""
    try:
        if under_launcher() or world_size == 1:
            run_reporting(worker, cfg_dict)
        else:
            launch_reporting(launch, world_size, worker, cfg_dict)
    except RankFailure as err:
        print(f"pretrain: {err}", file=sys.stderr)
        return 1
    except (Interrupted, KeyboardInterrupt):
        if not under_launcher():  # under torchrun the other ranks may still be writing
            remove_partial_checkpoints(run_dir)
        print(f"pretrain: {INTERRUPTED}", file=sys.stderr)
        return INTERRUPTED_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
