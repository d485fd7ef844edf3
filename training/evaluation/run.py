"""One evaluation: tasks resolved and checked, the checkpoint exported, lm-eval run, results
written. Everything that can be wrong with the input (an unknown task, a missing file, a bad
row, a test set other than the one the corpus was cleaned against, a choice longer than the
model's context) fails before the model is loaded."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from training.evaluation.harness import go_offline, harness_config, run_harness, shot_counts
from training.evaluation.report import flat_metrics, write_report, write_tensorboard
from training.evaluation.selection import EvalTask, read_decontamination, select_tasks
from training.evaluation.task_data import TaskDataError, count_items, write_task_data


@dataclass
class Evaluation:
    results: dict  # lm-eval's
    metrics: dict  # flat: eval/<task>/<k>shot/<metric> -> value
    step: int | None
    out: Path


def is_hf_folder(path: Path) -> bool:
    return (Path(path) / "config.json").is_file()


def model_source(model: Path) -> tuple[Path | None, int | None, str | None]:
    """(checkpoint folder or None for a Hugging Face folder, its step, its run's curated OUT)."""
    from training.checkpoint_format import read_index, resolve_checkpoint
    from training.config import TrainingConfig

    if is_hf_folder(model):
        return None, None, None
    ckpt = resolve_checkpoint(Path(model))
    index = read_index(ckpt)
    cfg = TrainingConfig.model_validate(index["config"])
    return ckpt, int(index["step"]), (None if cfg.data.is_synthetic else cfg.data.curated)


def default_out(model: Path) -> Path:
    """<run>/evals/<step folder> for a checkpoint; <folder>/eval for a Hugging Face folder."""
    if is_hf_folder(model):
        return Path(model) / "eval"
    from training.checkpoint_format import resolve_checkpoint

    ckpt = resolve_checkpoint(Path(model))
    return ckpt.parent.parent / "evals" / ckpt.name


def evaluate(model: Path, task_names: list[str], shots: list[int | str], out: Path, *,
             registry_files: list[str] = (), curated: str | None = None,
             tokenizer: Path | None = None, device: str = "cpu", batch_size: int = 8,
             limit: int | None = None, tensorboard_run: Path | None = None) -> Evaluation:
    go_offline()
    ckpt, step, run_curated = model_source(Path(model))
    decontamination, where = read_decontamination(curated or run_curated)
    tasks = select_tasks(task_names, list(registry_files), decontamination, where)
    counts = {t.name: shot_counts(shots, t.task.entry.few_shot) for t in tasks}
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="textmill-eval-") as tmp:
        tmp = Path(tmp)
        data = {t.name: write_task_data(t.task, tmp / "data") for t in tasks}
        hf_dir = Path(model) if ckpt is None else _export(ckpt, tmp / "hf", tokenizer)
        check_continuations(tasks, data, hf_dir)
        configs = [harness_config(t.name, t.task.entry.kind, data[t.name], k, tmp / "cache")
                   for t in tasks for k in counts[t.name]]
        results = run_harness(hf_dir, configs, device=device, batch_size=batch_size,
                              limit=limit)
        items = {t.name: count_items(data[t.name]["test"]) for t in tasks}
    from lm_eval.utils import handle_non_serializable

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps(results, indent=2, default=handle_non_serializable), encoding="utf-8")
    title = f"{ckpt or model}" + (f" (step {step})" if step is not None else "")
    write_report(out / "report.md", title=title, results=results, tasks=tasks, shots=counts,
                 items=items, decontam_where=where, decontam_known=decontamination is not None)
    metrics = flat_metrics(results)
    if tensorboard_run is not None:
        write_tensorboard(tensorboard_run, step or 0, metrics)
    return Evaluation(results, metrics, step, out)


def _export(ckpt: Path, hf_dir: Path, tokenizer: Path | None) -> Path:
    from training.export_hf import export_hf

    files = export_hf(ckpt, hf_dir, tokenizer)
    if not any(f.name == "tokenizer.json" for f in files):
        raise ValueError(f"{ckpt}: a synthetic-data run has no tokenizer to read task text "
                         "with; pass --tokenizer PATH")
    return hf_dir


def check_continuations(tasks: list[EvalTask], data: dict, hf_dir: Path) -> None:
    """Every answer lm-eval scores must fit the model's context with room for one token of
    context; lm-eval would stop on an assertion deep inside its loop."""
    from tokenizers import Tokenizer

    config = json.loads((hf_dir / "config.json").read_text())
    window = config.get("n_positions") or config.get("max_position_embeddings")
    tokenizer = Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    for task in tasks:
        kind = task.task.entry.kind
        if kind == "yesno" or not window:
            continue
        with open(data[task.name]["test"], encoding="utf-8") as lines:
            for item, line in enumerate(lines, start=1):
                record = json.loads(line)
                answers = ([record["text"].split(" ")[-1]] if kind == "cloze"
                           else record["choices"])
                for answer in answers:
                    length = len(tokenizer.encode(" " + answer).ids)
                    if length >= window:
                        raise TaskDataError(
                            f"task {task.name!r}: item {item}: the answer {answer[:60]!r} is "
                            f"{length} tokens, more than the model's context of {window} "
                            "leaves for it")
