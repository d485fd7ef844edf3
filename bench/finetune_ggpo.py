"""LoRA vs LoRA-GGPO vs full fine-tuning of a tiny pre-trained model, held-out loss over
training length, 3 seeds; and GGPO's step-time overhead over plain LoRA.

Everything is made from text on this machine. The base model is pre-trained on Python's own
reference documentation (pydoc_data.topics) with a byte-level BPE trained on the same text.
The task: the first line of a standard-library function's docstring as the prompt, the
function's name as the completion (`"Return the base name of pathname p.\\ndef"` ->
`" basename"`), the loss on the completion only; 20% of the examples are held out. Each run
trains with a constant learning rate and evaluates on the held-out set every epoch, so
one run gives the held-out loss at every training length up to `--epochs`.

    .venv/bin/python -m bench.finetune_ggpo [--epochs 12] [--seeds 1 2 3] [--out DIR]

Writes bench/results/finetune_ggpo.json, .png and .md.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from training.checkpoint import save_checkpoint
from training.config import TrainingConfig
from training.finetune.setup import prepare
from training.finetune.trainer import FinetuneTrainer
from training.parallel.grid import destroy_grid
from training.trainer import Trainer, setup_process

RESULTS = Path(__file__).parent / "results"
SEQ_LEN = 32
MODULES = """abc argparse ast base64 bisect calendar cgi codecs colorsys configparser contextlib
copy csv dataclasses datetime difflib dis doctest email.utils enum filecmp fnmatch fractions
ftplib functools getopt gettext glob gzip heapq hmac html html.parser http.client
http.cookies imaplib importlib inspect ipaddress json locale logging mailbox mimetypes
netrc ntpath numbers operator optparse os os.path pathlib pickle pkgutil platform plistlib
poplib posixpath pprint pstats py_compile queue quopri random re reprlib sched secrets
selectors shelve shlex shutil smtplib socket socketserver ssl stat statistics string
subprocess sysconfig tabnanny tarfile tempfile textwrap threading timeit token tokenize
trace traceback types typing unittest.case urllib.parse urllib.request uuid warnings wave
weakref xml.dom.minidom xml.etree.ElementTree zipfile zipimport""".split()
METHODS = {
    "LoRA": {"lora": {"rank": 8, "alpha": 16}, "ggpo": None, "lr": 3e-3},
    "LoRA-GGPO": {"lora": {"rank": 8, "alpha": 16}, "ggpo": {"sigma": 0.03, "beta": 0.01},
                  "lr": 3e-3},
    "full": {"lora": None, "ggpo": None, "lr": 1e-3},
}


def docstring_task() -> list[dict]:
    """(first docstring line + "\\ndef", " name") of every public stdlib function and method
    with a docstring line that does not give the name away; one example per prompt."""
    seen = {}
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # noqa: BLE001 - a module this Python lacks is simply skipped
            continue
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_"):
                continue
            candidates = [(name, obj)]
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                candidates += [(n, o) for n, o in sorted(vars(obj).items())
                               if not n.startswith("_") and inspect.isfunction(o)]
            for fn_name, fn in candidates:
                if not inspect.isfunction(fn) or fn.__module__ != module.__name__:
                    continue
                doc = inspect.getdoc(fn)
                first = doc.strip().splitlines()[0].strip() if doc else ""
                if 15 < len(first) < 90 and fn_name.lower() not in first.lower():
                    seen.setdefault(first, fn_name)
    return [{"prompt": prompt + "\ndef", "completion": " " + name}
            for prompt, name in seen.items()]


def train_tokenizer(path: Path, texts: list[str], vocab_size: int = 1024) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(path))


class WindowSource:
    """Pre-training samples: windows of seq_len + 1 tokens of one long token stream."""

    def __init__(self, tokens: np.ndarray, vocab_size: int, offset: int = 0):
        self.tokens, self.vocab_size, self.eod_id, self.offset = tokens, vocab_size, None, offset

    def local_batch(self, consumed, global_batch, dp_rank, dp_size):
        starts = (np.arange(consumed, consumed + global_batch) * 7919 + self.offset) % \
            (len(self.tokens) - SEQ_LEN - 1)
        return torch.from_numpy(np.stack([self.tokens[s: s + SEQ_LEN + 1] for s in starts]))


def pretrain_base(work: Path, steps: int) -> tuple[Path, Path]:
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer

    curated = work / "curated"
    curated.mkdir(parents=True, exist_ok=True)
    texts = list(topics.values())
    train_tokenizer(curated / "tokenizer.json", texts)
    tokenizer = Tokenizer.from_file(str(curated / "tokenizer.json"))
    eod = tokenizer.token_to_id("<|endoftext|>")
    stream = np.concatenate([np.array(e.ids + [eod], dtype=np.int64)
                             for e in tokenizer.encode_batch(texts)])
    cfg = TrainingConfig.model_validate({
        "model": {"layers": 2, "hidden": 64, "heads": 4, "seq_len": SEQ_LEN,
                  "pad_vocab_to": 64},
        "batch": {"micro": 16, "global": 16},
        "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup": 20, "weight_decay": 0.1},
        "train": {"steps": steps, "save_every": steps, "log_every": 50,
                  "dir": str(work / "base"), "seed": 11},
        "data": {"curated": str(curated)}})
    source = WindowSource(stream, tokenizer.get_vocab_size())
    trainer = Trainer(cfg, sources=(source, WindowSource(stream, source.vocab_size, 13)))
    records = trainer.run(on_save=save_checkpoint)
    trainer.close()
    destroy_grid()
    print(f"base: {len(stream)} tokens, loss {records[0]['loss']:.3f} -> "
          f"{records[-1]['loss']:.3f} in {steps} steps", flush=True)
    return work / "base", curated / "tokenizer.json"


def finetune(base: Path, tokenizer: Path, task: Path, run_dir: Path, method: dict,
             seed: int, epochs: float) -> dict:
    raw = {
        "batch": {"micro": 16, "global": 16},
        "optim": {"lr": method["lr"], "min_lr": method["lr"], "warmup": 0, "clip": 1.0},
        "train": {"dir": str(run_dir), "seed": seed, "log_every": 1},
        "finetune": {"init_from": str(base), "lora": method["lora"], "ggpo": method["ggpo"],
                     "data": {"paths": [str(task)], "prompt_field": "prompt",
                              "completion_field": "completion", "tokenizer": str(tokenizer)},
                     "epochs": epochs, "eval_fraction": 0.2},
    }
    probe = prepare(raw, "bench", {})
    per_epoch = probe.train.steps / epochs
    raw["train"]["eval_every"] = max(1, round(per_epoch))
    cfg = prepare(raw, "bench", {})
    trainer = FinetuneTrainer(cfg)
    start = time.perf_counter()
    records = trainer.run()
    seconds = time.perf_counter() - start
    trainer.close()
    destroy_grid()
    curve = [(r["step"] / per_epoch, r["val_loss"]) for r in records if "val_loss" in r]
    last_epoch = records[-max(1, round(per_epoch)):]
    return {"curve": curve, "step_s": statistics.median(r["step_s"] for r in records),
            "train_loss": records[-1]["loss"], "seconds": seconds,
            "last_epoch_train_loss": statistics.mean(r["loss"] for r in last_epoch),
            "trainable": sum(p.numel() for p in trainer.buckets.offsets)}


def ggpo_overhead(base: Path, tokenizer: Path, task: Path, work: Path, rounds: int,
                  block: int) -> dict:
    """Step time with GGPO on and off in alternating blocks of one LoRA-GGPO trainer, so both
    see the same machine load: median seconds per step of each."""
    method = METHODS["LoRA-GGPO"]
    raw = {"batch": {"micro": 16, "global": 16}, "optim": {"lr": method["lr"]},
           "train": {"dir": str(work / "overhead"), "seed": 1, "log_every": 10_000,
                     "steps": 10_000},
           "finetune": {"init_from": str(base), "lora": method["lora"], "ggpo": method["ggpo"],
                        "data": {"paths": [str(task)], "prompt_field": "prompt",
                                 "completion_field": "completion",
                                 "tokenizer": str(tokenizer)}}}
    shutil.rmtree(work / "overhead", ignore_errors=True)
    trainer = FinetuneTrainer(prepare(raw, "bench", {}))
    ggpo, times = trainer.ggpo, {"LoRA": [], "LoRA-GGPO": []}
    for _ in range(2):
        trainer.train_step()  # warm-up; GGPO has its first gradient norms
    for _ in range(rounds):
        for name in times:
            trainer.ggpo = ggpo if name == "LoRA-GGPO" else None
            if trainer.ggpo is None:
                ggpo.end()
            for _ in range(block):
                start = time.perf_counter()
                trainer.train_step()
                times[name].append(time.perf_counter() - start)
    work_s = []  # GGPO's own work per step: (G1)-(G4) for every layer, then (G2)'s norms
    for step in range(20):
        start = time.perf_counter()
        ggpo.begin_step(trainer.step + 1 + step)
        ggpo.observe_gradients(trainer.buckets)
        work_s.append(time.perf_counter() - start)
    trainer.close()
    destroy_grid()
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {**medians, "ratio": medians["LoRA-GGPO"] / medians["LoRA"],
            "steps_each": rounds * block, "ggpo_work_s": statistics.median(work_s)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--base-steps", type=int, default=200)
    parser.add_argument("--examples", type=int, default=240,
                        help="task examples used (a seeded sample of all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the step-time comparison (reuses --work's base and task)")
    parser.add_argument("--work", type=Path, help="working folder; its pre-trained base is "
                        "reused if there")
    args = parser.parse_args()
    setup_process()
    work = args.work or Path(tempfile.mkdtemp(prefix="finetune-ggpo-"))
    if (work / "base" / "checkpoints" / "latest").is_file():  # a base pre-trained before
        base, tokenizer = work / "base", work / "curated" / "tokenizer.json"
    else:
        base, tokenizer = pretrain_base(work, args.base_steps)
    examples = docstring_task()
    keep = np.random.default_rng(0).permutation(len(examples))[: args.examples]
    examples = [examples[i] for i in sorted(keep)]
    task = work / "task.jsonl"
    task.write_text("".join(json.dumps(e) + "\n" for e in examples))
    args.out.mkdir(parents=True, exist_ok=True)
    overhead = ggpo_overhead(base, tokenizer, task, work, rounds=4, block=5)
    (args.out / "finetune_ggpo_overhead.json").write_text(json.dumps(overhead, indent=1))
    print(f"step time, alternating blocks: LoRA {overhead['LoRA']:.4f}s, LoRA-GGPO "
          f"{overhead['LoRA-GGPO']:.4f}s, ratio {overhead['ratio']:.2f}; GGPO's own work "
          f"{overhead['ggpo_work_s']:.4f}s per step", flush=True)
    if args.overhead_only:
        return
    print(f"task: {len(examples)} examples (80% train, 20% held out)", flush=True)
    runs = {}
    for seed in args.seeds:
        for name, method in METHODS.items():
            shutil.rmtree(work / f"{name}-{seed}", ignore_errors=True)
            result = finetune(base, tokenizer, task, work / f"{name}-{seed}", method, seed,
                              args.epochs)
            runs.setdefault(name, []).append(result)
            best = min(v for _, v in result["curve"])
            print(f"{name} seed {seed}: held-out {result['curve'][0][1]:.3f} -> best {best:.3f}"
                  f" -> final {result['curve'][-1][1]:.3f}, median step {result['step_s']:.4f}s",
                  flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "finetune_ggpo.json").write_text(json.dumps(
        {"examples": len(examples), "epochs": args.epochs, "seeds": args.seeds, "runs": runs},
        indent=1))
    report(runs, args.out)


def report(runs: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    first = runs["LoRA"][0]["curve"][0][0]
    lines = [f"| method | trainable params | held-out loss after {first:.0f} epoch | best (epoch) "
             "| final | median step (s) |", "|---|---|---|---|---|---|"]
    for name, results in runs.items():
        epochs = np.array([e for e, _ in results[0]["curve"]])
        values = np.array([[v for _, v in r["curve"]] for r in results])
        mean, spread = values.mean(0), values.std(0)
        ax.plot(epochs, mean, label=name)
        ax.fill_between(epochs, mean - spread, mean + spread, alpha=0.2)
        best = int(mean.argmin())
        steps = statistics.median(r["step_s"] for r in results)
        lines.append(f"| {name} | {results[0]['trainable']:,} | {mean[0]:.3f} | "
                     f"{mean[best]:.3f} ({epochs[best]:.1f}) | {mean[-1]:.3f} ± "
                     f"{spread[-1]:.3f} | {steps:.4f} |")
    overhead = statistics.median(r["step_s"] for r in runs["LoRA-GGPO"]) / \
        statistics.median(r["step_s"] for r in runs["LoRA"])
    lines.append(f"\nGGPO step time / LoRA step time: {overhead:.2f}")
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("held-out loss (completion tokens)")
    ax.set_title("docstring -> function name, mean ± std over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "finetune_ggpo.png", dpi=120)
    (out / "finetune_ggpo.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
