"""`pretrain eval CKPT --tasks TASK... [--shots 0,1,few] [--out DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.evaluation.harness import parse_shots


def eval_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="pretrain eval",
        description="Zero-, one- and few-shot accuracy with lm-evaluation-harness (offline) on "
        "the tasks decontamination used: DIR/results.json (lm-eval's), DIR/report.md.")
    parser.add_argument("model", help="a checkpoint (step folder, or a run folder: its latest) "
                        "or a Hugging Face folder (e.g. from `pretrain export-hf`)")
    parser.add_argument("--tasks", nargs="+", required=True, metavar="TASK",
                        help="registered task names (shipped: pydoc_cloze, pydoc_choice, "
                        "pydoc_yesno), or tasks the run's corpus was decontaminated against")
    parser.add_argument("--shots", default="0", help="shot counts, e.g. 0,1,few (few: each "
                        "task's few_shot, default 5); default 0")
    parser.add_argument("--out", help="output folder (default <run>/evals/<step folder>)")
    parser.add_argument("--registry", action="append", default=[], metavar="FILE",
                        help="a task registry YAML of your own tasks (repeatable)")
    parser.add_argument("--curated", help="the curated OUT whose decontamination.json to "
                        "check and report (default: the checkpoint's data.curated)")
    parser.add_argument("--tokenizer", help="tokenizer.json (default: the run's data.curated)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--limit", type=int, help="score only the first N items of each task")
    parser.add_argument("--tensorboard", metavar="RUN_DIR", help="also log the metrics to "
                        "RUN_DIR/tb (default: MODEL's when MODEL is a run folder)")
    args = parser.parse_args(argv)

    from curation.tasks.registry import TaskError
    from training.checkpoint_format import CheckpointError
    from training.config import ConfigError
    from training.evaluation.run import default_out, evaluate
    from training.evaluation.task_data import TaskDataError

    model = Path(args.model)
    board = args.tensorboard or (model if (model / "checkpoints").is_dir() else None)
    try:
        shots = parse_shots(args.shots)
        if not model.exists():
            raise FileNotFoundError(f"{model}: no such checkpoint or Hugging Face folder")
        out = Path(args.out) if args.out else default_out(model)
        done = evaluate(model, args.tasks, shots, out, registry_files=args.registry,
                        curated=args.curated, tokenizer=args.tokenizer, device=args.device,
                        batch_size=args.batch_size, limit=args.limit,
                        tensorboard_run=Path(board) if board else None)
    except (TaskError, TaskDataError, CheckpointError, ConfigError, FileNotFoundError,
            ValueError) as err:
        print(f"pretrain eval: {err}", file=sys.stderr)
        return 2
    print((done.out / "report.md").read_text(encoding="utf-8"))
    print(f"wrote {done.out / 'results.json'} and {done.out / 'report.md'}")
    return 0
