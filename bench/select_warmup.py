"""Does GOT-D's selection warm a model up for a target domain better than DSIR or random?

The experiment of issue 19 at this machine's scale, through textmill's own commands:

1. A pool mixing five real domains found on any Linux machine with Python: the Python
   language reference (pydoc topics), stdlib docstrings, stdlib source code, man pages and
   Debian copyright files (the last two from /usr/share; a domain missing there is left out).
   Every domain is cut into documents of about 120 words.
2. The target is the reference domain: 50 of its documents are the unlabelled target inputs
   (and the fine-tuning sample), 80 are held out for validation; the rest stay in the pool.
3. A tiny GPT (training/configs/tiny.yaml) is pre-trained on the whole pool.
4. For each method (got, dsir, random) and seed: `curate run` with the `select` stage
   (budget: the same token count for every method), then a warm-up from the base checkpoint
   on the selected documents (`train.init_from`, same steps), then a short fine-tune on the
   target sample; the target validation loss is measured after each. "none" fine-tunes the
   base model without a warm-up.

    .venv/bin/python bench/select_warmup.py --out /tmp/select_warmup \
        --json bench/select_warmup.json

Writes the figures as JSON (read by the notebook's selection section) and prints a table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sysconfig
import time
from pathlib import Path

import numpy as np

from curation.demo.python_text import docstring_records, pydoc_topic_records
from curation.select.features import token_counts

WORDS_PER_DOC = 120
METHODS = ("got", "dsir", "random")


def _chunks(text: str, words: int = WORDS_PER_DOC) -> list[str]:
    """Consecutive lines grouped into documents of about `words` words."""
    docs, lines, count = [], [], 0
    for line in text.splitlines():
        lines.append(line)
        count += len(line.split())
        if count >= words:
            docs.append("\n".join(lines).strip())
            lines, count = [], 0
    if count >= words // 3:
        docs.append("\n".join(lines).strip())
    return [d for d in docs if d]


def _troff_text(source: str) -> str:
    lines = []
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        line = re.sub(r"^\.[A-Za-z]+\s*", "", line)
        line = re.sub(r"\\f[BIRP]|\\\(..|\\[-e&|^]|\\s[-+]?\d", "", line)
        lines.append(line.replace('"', ""))
    return "\n".join(lines)


def domains(per_domain: int, rng: np.random.Generator) -> dict[str, list[str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found = {
        "reference": [c for r in pydoc_topic_records() for c in _chunks(r["text"])],
        "docstrings": [r["text"] for r in docstring_records()],
        "code": [c for p in sorted(stdlib.glob("*.py"))[:200]
                 for c in _chunks(p.read_text(errors="replace"))],
        "man": [c for p in sorted(Path("/usr/share/man/man1").glob("*.1*.gz"))[:300]
                for c in _chunks(_troff_text(gzip.open(p, "rt", errors="replace").read()))],
        "licenses": [c for p in sorted(Path("/usr/share/doc").glob("*/copyright"))[:300]
                     for c in _chunks(p.read_text(errors="replace"))],
    }
    picked = {}
    for name, docs in found.items():
        if docs:
            keep = np.sort(rng.permutation(len(docs))[:per_domain])
            picked[name] = [docs[i] for i in keep]
    return picked


def _write_jsonl(path: Path, texts: list[str], prefix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": f"{prefix}{i}", "text": text}) + "\n")


def build_data(root: Path, per_domain: int, target_docs: int, val_docs: int) -> dict:
    rng = np.random.default_rng(0)
    found = domains(per_domain + target_docs + val_docs, rng)
    reference = found["reference"]
    order = rng.permutation(len(reference))
    target = [reference[i] for i in order[:target_docs]]
    val = [reference[i] for i in order[target_docs:target_docs + val_docs]]
    found["reference"] = [reference[i] for i in np.sort(order[target_docs + val_docs:])]
    pool = {name: docs[:per_domain] for name, docs in found.items()}
    for name, docs in pool.items():
        _write_jsonl(root / "pool" / f"{name}.jsonl", docs, f"{name}-")
    _write_jsonl(root / "target" / "sample.jsonl", target, "t")
    _write_jsonl(root / "target" / "val.jsonl", val, "v")
    return {"pool_docs": {n: len(d) for n, d in pool.items()},
            "pool_tokens": int(sum(token_counts(d).sum() for d in pool.values())),
            "target_docs": len(target), "val_docs": len(val)}


def curate(root: Path, out: Path, client, seed: int, select: dict | None,
           sources: list[str], tokenizer: dict, folder: str = "pool") -> float:
    """`curate run` of the given spec; returns the select stage's seconds (0 without it)."""
    from curation.pipeline import run_pipeline
    from curation.spec import parse_spec

    spec = parse_spec({
        "name": out.name, "seed": seed,
        "sources": [{"name": s, "paths": [f"{folder}/{s}.jsonl"], "id_field": "id"}
                    for s in sources],
        "stages": {} if select is None else {"select": select},
        "tokenizer": tokenizer}, base_dir=root)
    run_pipeline(spec, out, client)
    manifests = list((out / "stages").glob("*_select/_manifest.json"))
    return json.loads(manifests[0].read_text())["seconds"] if manifests else 0.0


def train(run: Path, curated: Path, steps: int, seed: int, init_from: Path | None) -> None:
    """`pretrain tiny` in this process, on one core: on a shared machine two intra-op
    threads spin against other processes (17 s against 2 s a step, measured here)."""
    from training.cli import main as pretrain

    overrides = {"data.curated": curated, "train.steps": steps, "train.save_every": steps,
                 "batch.micro": 8, "batch.global": 8,
                 "train.eval_every": 10 * steps, "train.log_every": max(1, steps // 4),
                 "train.dir": run, "train.seed": seed, "optim.warmup": max(1, steps // 10)}
    if init_from is not None:
        overrides["train.init_from"] = init_from
    args = ["tiny"] + [x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]
    if (run / "checkpoints").exists():
        return  # finished earlier (the bench is resumable)
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})  # the trainer sizes its threads by affinity
    try:
        if pretrain(args) not in (0, None):
            raise RuntimeError(f"pretrain {' '.join(args)} failed")
    finally:
        os.sched_setaffinity(0, cores)


def target_loss(run: Path, tokenizer_json: Path, val_file: Path) -> float:
    """Mean next-token loss of the run's last checkpoint on the held-out target documents,
    packed into windows of seq_len + 1 tokens (each document ends with EOD)."""
    import torch
    from tokenizers import Tokenizer

    from curation.tokenize import EOD_TOKEN
    from training.embed import CheckpointEncoder

    encoder = CheckpointEncoder(run, tokenizer_json)
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    eod = tokenizer.token_to_id(EOD_TOKEN)
    texts = [json.loads(line)["text"] for line in val_file.read_text().splitlines()]
    stream = [t for e in tokenizer.encode_batch(texts) for t in [*e.ids, eod]]
    width = encoder.cfg.seq_len + 1
    windows = torch.tensor(stream[: len(stream) // width * width]).view(-1, width)
    with torch.no_grad():
        return float(encoder.model(windows[:, :-1], windows[:, 1:]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path, default=Path("bench/select_warmup.json"))
    ap.add_argument("--per-domain", type=int, default=300)
    ap.add_argument("--budget", type=float, default=0.2, help="share of the pool's tokens")
    ap.add_argument("--pretrain-steps", type=int, default=150)
    ap.add_argument("--warmup-steps", type=int, default=30)
    ap.add_argument("--finetune-steps", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    import torch
    from dask.distributed import Client, LocalCluster

    torch.set_flush_denormal(True)
    root = args.out
    started = time.perf_counter()
    data = build_data(root, args.per_domain, target_docs=50, val_docs=80)
    sources = sorted(data["pool_docs"])
    budget = {"tokens": round(args.budget * data["pool_tokens"])}
    target = {"paths": ["target/sample.jsonl"]}
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "json", "budget")}
    results = {"setup": {**data, "budget_share": args.budget, "budget": budget, **settings},
               "runs": []}
    val = root / "target" / "val.jsonl"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        base_out = root / "curated" / "base"
        curate(root, base_out, client, 0, None, sources, {"train": {"vocab_size": 2048}})
        tokenizer = base_out / "tokenizer.json"
        fixed = {"path": str(tokenizer)}
        sample_out = root / "curated" / "target_sample"
        curate(root, sample_out, client, 0, None, ["sample"], fixed, folder="target")
        base = root / "runs" / "base"
        train(base, base_out, args.pretrain_steps, 0, None)
        base_loss = target_loss(base, tokenizer, val)
        results["setup"]["base_target_loss"] = base_loss
        for seed in args.seeds:
            finetuned = root / "runs" / f"none-{seed}-ft"
            train(finetuned, sample_out, args.finetune_steps, seed, base)
            results["runs"].append({"method": "none", "seed": seed, "warmup_loss": base_loss,
                                    "finetune_loss": target_loss(finetuned, tokenizer, val)})
            for method in METHODS:
                select = {"method": method, "budget": budget,
                          **({} if method == "random" else {"target": target})}
                out = root / "curated" / f"{method}-{seed}"
                seconds = curate(root, out, client, seed, select, sources, fixed)
                selection = json.loads((out / "selection.json").read_text())
                warm = root / "runs" / f"{method}-{seed}"
                train(warm, out, args.warmup_steps, seed, base)
                finetuned = root / "runs" / f"{method}-{seed}-ft"
                train(finetuned, sample_out, args.finetune_steps, seed, warm)
                results["runs"].append({
                    "method": method, "seed": seed,
                    "select_seconds": seconds,
                    "docs_per_s": round(sum(data["pool_docs"].values()) / seconds, 1),
                    "chosen": {s: v["chosen"]["docs"] for s, v in selection["sources"].items()},
                    "warmup_loss": target_loss(warm, tokenizer, val),
                    "finetune_loss": target_loss(finetuned, tokenizer, val)})
                print(json.dumps(results["runs"][-1]), flush=True)
    results["setup"]["wall_s"] = round(time.perf_counter() - started, 1)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(summary_table(results))


def summary_table(results: dict) -> str:
    """Markdown: per method, mean ± std over seeds of the target losses, and docs/s."""
    rows = ["| method | target loss after warm-up | after fine-tune | select docs/s |",
            "|---|---|---|---|"]
    for method in ("none", *METHODS):
        runs = [r for r in results["runs"] if r["method"] == method]
        if not runs:
            continue
        warm = np.array([r["warmup_loss"] for r in runs])
        tuned = np.array([r["finetune_loss"] for r in runs])
        speed = [r["docs_per_s"] for r in runs if "docs_per_s" in r]
        docs_per_s = f"{np.mean(speed):.0f}" if speed else "–"
        rows.append(f"| {method} | {warm.mean():.4f} ± {warm.std():.4f} | "
                    f"{tuned.mean():.4f} ± {tuned.std():.4f} | {docs_per_s} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
