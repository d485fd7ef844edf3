"""LoRA vs LoRA-GGPO over LoRA ranks on the docstring -> function-name task of
bench/finetune_ggpo.py (same base, task, split, learning rate and training length), 3 seeds,
full fine-tuning as a reference line: the training and held-out loss after the run, per rank.
The GGPO coefficients are the reference implementation's defaults, not tuned.

    .venv/bin/python -m bench.finetune_ggpo_ranks --work DIR [--ranks 1 2 4 8 16 32 64]
        [--epochs 6] [--seeds 1 2 3]
    .venv/bin/python -m bench.finetune_ggpo_ranks --work DIR --report

Reuses DIR's pre-trained base if there (else pre-trains one as finetune_ggpo does); seeds may
run as separate processes on one DIR (after its base exists). Every finished run is kept in
DIR/ranks-seed<N>.json; the report (bench/results/finetune_ggpo_ranks.json, .png, .md) covers
the runs finished (`--tag T`: finetune_ggpo_ranks-T.*).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

import numpy as np

from bench.finetune_ggpo import METHODS, RESULTS, docstring_task, finetune, pretrain_base
from training.trainer import setup_process


def sweep(base, tokenizer, task, work: Path, ranks, seed, epochs) -> None:
    """One seed's runs, each appended to work/ranks-seed<seed>.json as it ends (so a sweep
    stopped early still reports what it finished)."""
    log = work / f"ranks-seed{seed}.json"
    done = json.loads(log.read_text()) if log.is_file() else []
    plans = [(name, rank) for rank in ranks for name in ("LoRA", "LoRA-GGPO")] + [("full", 0)]
    for name, rank in plans:
        if any(d["method"] == name and d["rank"] == rank for d in done):
            continue
        method = dict(METHODS[name])
        if rank:  # alpha / rank = 2 at every rank, as rank 8 alpha 16
            method["lora"] = {"rank": rank, "alpha": 2.0 * rank}
        run_dir = work / f"ranks-{name}-{rank}-{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)
        result = finetune(base, tokenizer, task, run_dir, method, seed, epochs)
        shutil.rmtree(run_dir, ignore_errors=True)
        done.append({"method": name, "rank": rank, "seed": seed, **result})
        log.write_text(json.dumps(done, indent=1))
        print(f"{name} rank {rank or 'full'} seed {seed}: train "
              f"{result['last_epoch_train_loss']:.3f}, held-out {result['curve'][-1][1]:.3f}"
              f" (best {min(v for _, v in result['curve']):.3f})", flush=True)


def collect(work: Path) -> dict:
    """{method: {rank (0 = full fine-tuning): [result per seed]}} of every finished run."""
    runs: dict[str, dict[int, list]] = {}
    for log in sorted(work.glob("ranks-seed*.json")):
        for run in json.loads(log.read_text()):
            runs.setdefault(run["method"], {}).setdefault(run["rank"], []).append(run)
    return runs


def report(runs: dict, epochs: float, out: Path, stem: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    lines = [f"| method | rank | trainable params | train loss (last epoch) | held-out loss after "
             f"{epochs:g} epochs | best held-out |", "|---|---|---|---|---|---|"]
    for name, by_rank in runs.items():
        ranks = sorted(by_rank)
        stats = {}
        for key in ("train", "held", "best"):
            values = np.array([[pick(r, key) for r in by_rank[rank]] for rank in ranks])
            stats[key] = values.mean(1), values.std(1)
        for i, rank in enumerate(ranks):
            lines.append(f"| {name} | {rank or '-'} | {by_rank[rank][0]['trainable']:,} | "
                         + " | ".join(f"{stats[k][0][i]:.3f} ± {stats[k][1][i]:.3f}"
                                      for k in ("train", "held", "best")) + " |")
        for ax, key in zip(axes, ("train", "held"), strict=True):
            mean, spread = stats[key]
            if name == "full":  # far below the LoRA curves: named, not drawn
                ax.plot([], [], " ", label=f"full fine-tuning: {mean[0]:.2f}")
                continue
            ax.errorbar(ranks, mean, yerr=spread, marker="o", capsize=3, label=name)
    for ax, title in zip(axes, ("training loss (last epoch)", "held-out loss (end)"),
                         strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("LoRA rank (alpha = 2 rank)")
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"docstring -> function name, {epochs:g} epochs, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=120)
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def curves(runs: dict, out: Path, stem: str) -> None:
    """Held-out loss over training length per method and rank, mean over seeds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ranks = sorted({rank for by_rank in runs.values() for rank in by_rank})
    for name, by_rank in runs.items():  # colour: the rank; line style: the method
        for rank, results in sorted(by_rank.items()):
            epochs = [e for e, _ in results[0]["curve"]]
            mean = np.array([[v for _, v in r["curve"]] for r in results]).mean(0)
            style = {"LoRA": "-", "LoRA-GGPO": "--", "full": ":"}[name]
            ax.plot(epochs, mean, style, color=f"C{ranks.index(rank)}",
                    label=f"{name} r={rank}" if rank else name)
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("held-out loss (completion tokens)")
    ax.set_title("held-out loss over training length, mean over seeds")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out / f"{stem}-curves.png", dpi=120)


def pick(result: dict, key: str) -> float:
    if key == "train":
        return result["last_epoch_train_loss"]
    values = [v for _, v in result["curve"]]
    return values[-1] if key == "held" else min(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--base-steps", type=int, default=200)
    parser.add_argument("--examples", type=int, default=240)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--tag", default="", help="suffix of the result files' names")
    parser.add_argument("--report", action="store_true",
                        help="only report the runs finished in --work (of any seed)")
    args = parser.parse_args()
    if not args.report:
        setup_process()
        work = args.work
        if (work / "base" / "checkpoints" / "latest").is_file():
            base, tokenizer = work / "base", work / "curated" / "tokenizer.json"
        else:
            base, tokenizer = pretrain_base(work, args.base_steps)
        examples = docstring_task()
        keep = np.random.default_rng(0).permutation(len(examples))[: args.examples]
        task = work / "task.jsonl"
        task.write_text("".join(json.dumps(examples[i]) + "\n" for i in sorted(keep)))
        for seed in args.seeds:
            sweep(base, tokenizer, task, work, args.ranks, seed, args.epochs)
    runs = collect(args.work)
    stem = "finetune_ggpo_ranks" + (f"-{args.tag}" if args.tag else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(
        {"epochs": args.epochs, "runs": {name: {str(k): v for k, v in by.items()}
                                          for name, by in runs.items()}}, indent=1))
    report(runs, args.epochs, args.out, stem)
    curves(runs, args.out, stem)
    print("median step seconds: " + ", ".join(
        f"{name} {statistics.median(r['step_s'] for rs in by.values() for r in rs):.4f}"
        for name, by in runs.items()))


if __name__ == "__main__":
    main()
