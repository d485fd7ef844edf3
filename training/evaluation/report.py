"""What an evaluation shows: DIR/report.md (a table per task and shot count with lm-eval's
stderr, and what decontamination removed for the task), flat metrics for metrics.jsonl, and
TensorBoard scalars."""

from __future__ import annotations

import re
from pathlib import Path

from training.evaluation.harness import task_name
from training.evaluation.selection import EvalTask

STDERR = "_stderr"
SHOT_TASK = re.compile(r"(.+)_(\d+)shot")  # harness.task_name's form


def task_metrics(results: dict, task: str, shots: int) -> dict[str, tuple[float, float | None]]:
    """metric -> (value, stderr) of one task at one shot count, from lm-eval's results."""
    line = results["results"].get(task_name(task, shots), {})
    metrics = {}
    for key, value in line.items():
        metric, _, _filter = key.partition(",")
        if not _filter or metric.endswith(STDERR) or not isinstance(value, int | float):
            continue
        stderr = line.get(f"{metric}{STDERR},{_filter}")
        metrics[metric] = (float(value), float(stderr) if isinstance(stderr, int | float)
                           else None)
    return metrics


def flat_metrics(results: dict) -> dict:
    """{"eval/<task>/<k>shot/<metric>": value}: the keys of metrics.jsonl and TensorBoard."""
    flat = {}
    for harness_task in results["results"]:
        named = SHOT_TASK.fullmatch(harness_task)
        if named:
            task, shots = named.group(1), int(named.group(2))
            for metric, (value, _) in task_metrics(results, task, shots).items():
                flat[f"eval/{task}/{shots}shot/{metric}"] = value
    return flat


def write_tensorboard(run_dir: Path, step: int, metrics: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    board = SummaryWriter(str(Path(run_dir) / "tb"))
    try:
        for tag, value in metrics.items():
            board.add_scalar(tag, value, step)
    finally:
        board.close()


def decontamination_line(task: EvalTask, where: str, known: bool) -> str:
    """`where` is decontamination.json's path when `known`, else why there is none."""
    if not known:
        return f"Decontamination: unknown, {where}."
    if task.decontamination is None:
        return f"Decontamination: the corpus was not checked against this task ({where})."
    line = task.decontamination
    return (f"Decontamination: {line.get('documents_modified', 0)} corpus documents cut and "
            f"{line.get('documents_dropped', 0)} dropped for this task "
            f"({line.get('characters_removed', 0)} characters removed; {where}).")


def write_report(path: Path, *, title: str, results: dict, tasks: list[EvalTask],
                 shots: dict[str, list[int]], items: dict[str, int], decontam_where: str,
                 decontam_known: bool) -> str:
    lines = [f"# Evaluation: {title}", "",
             f"lm-evaluation-harness {results.get('lm_eval_version', '?')}, offline; "
             f"model context {results.get('max_length', '?')} tokens. Each cell is lm-eval's "
             "metric ± its standard error.", ""]
    for task in tasks:
        entry = task.task.entry
        scored = min((results.get("n-samples", {}).get(task_name(task.name, k), {})
                      .get("effective", items[task.name]) for k in shots[task.name]),
                     default=items[task.name])
        limited = f" (the first {scored} scored)" if scored < items[task.name] else ""
        lines += [f"## {task.name}", "",
                  f"{entry.kind} task, {items[task.name]} items{limited}, files: "
                  + ", ".join(f"`{f}`" for f in task.task.files) + ".",
                  decontamination_line(task, decontam_where, decontam_known), ""]
        by_shot = {k: task_metrics(results, task.name, k) for k in shots[task.name]}
        names = list(dict.fromkeys(m for metrics in by_shot.values() for m in metrics))
        lines += ["| shots | " + " | ".join(names) + " |",
                  "|---" * (len(names) + 1) + "|"]
        for k, metrics in by_shot.items():
            cells = [_cell(*metrics[m]) if m in metrics else "" for m in names]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    Path(path).write_text(text, encoding="utf-8")
    return text


def _cell(value: float, stderr: float | None) -> str:
    digits = ",.1f" if abs(value) >= 1000 else ".3f"
    return f"{value:{digits}}" + (f" ± {stderr:{digits}}" if stderr is not None else "")
