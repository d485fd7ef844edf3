"""EleutherAI's lm-evaluation-harness on a Hugging Face folder, offline, on local task files.

Each (task, shot count) becomes one lm-eval task config, built from the kind's shipped YAML
(training/evaluation/kinds/) with the task's checked JSONL as `data_files`, named
`<task>_<k>shot`, so one harness run scores every task at every shot count and its results
are lm-eval's own. The Hugging Face hub and datasets are switched offline first: a task
that tried to download would fail, not fetch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import yaml

KINDS_DIR = Path(__file__).resolve().parent / "kinds"
# Offline, and serial: lm-eval bootstraps a stderr (the cloze kind's perplexity) in a
# multiprocessing Pool forked from this process, which may hold threads (torch's, a Dask
# client's); a forked child can wait forever on a lock such a thread held. It hung the suite.
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_EVALUATE_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "DISABLE_MULTIPROC": "1"}
# lm-eval bootstraps the stderr of non-mean metrics (perplexity); its default of 100000
# resamples takes minutes on a CPU for no gain in a report that prints two digits.
BOOTSTRAP_ITERS = 1000


def go_offline() -> None:
    """Before lm-eval, datasets or transformers is imported: nothing may be downloaded, and
    lm-eval forks no worker pool."""
    os.environ.update(OFFLINE)


def parse_shots(text: str, where: str = "--shots") -> list[int | str]:
    """`0,1,few` -> [0, 1, "few"]; `few` is each task's own few-shot count."""
    shots: list[int | str] = []
    for part in (p.strip() for p in text.split(",")):
        if part == "few":
            shots.append("few")
        elif part.isdigit():
            shots.append(int(part))
        else:
            raise ValueError(f"{where}: {part!r} is not a shot count (give numbers and `few`, "
                             "e.g. 0,1,few)")
    if not shots:
        raise ValueError(f"{where}: give at least one shot count")
    return list(dict.fromkeys(shots))


def shot_counts(shots: list[int | str], few_shot: int) -> list[int]:
    return list(dict.fromkeys(few_shot if s == "few" else int(s) for s in shots))


def task_name(task: str, shots: int) -> str:
    return f"{task}_{shots}shot"


def harness_config(name: str, kind: str, data: dict[str, Path], shots: int,
                   cache_dir: Path) -> dict:
    """The lm-eval task config of one task at one shot count."""
    config = yaml.safe_load((KINDS_DIR / f"{kind}.yaml").read_text(encoding="utf-8"))
    config["task"] = task_name(name, shots)
    config["dataset_kwargs"] = {"data_files": {split: str(path) for split, path in data.items()},
                                "cache_dir": str(cache_dir)}
    config["fewshot_split"] = "fewshot" if "fewshot" in data else "test"
    config["num_fewshot"] = shots
    return config


def run_harness(hf_dir: Path, configs: list[dict], device: str = "cpu",
                batch_size: int = 8, limit: int | None = None) -> dict:
    """lm-eval's results dict (without per-item samples) for the task configs."""
    go_offline()
    # one warning per request whose context a small model's window cuts from the left
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model = HFLM(pretrained=str(hf_dir), device=device, batch_size=batch_size,
                 dtype="float32")
    return simple_evaluate(model=model, tasks=configs,
                           task_manager=TaskManager(include_defaults=False),
                           log_samples=False, bootstrap_iters=BOOTSTRAP_ITERS, limit=limit)
