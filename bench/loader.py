"""Blended-dataset loader benchmark (issue 5).

1. Index build for --tokens tokens in 15 sources (the MT-NLG weight table), seq_len 2048:
   blending, then per source the document, sample and shuffle indices (one core).
2. The blending rule vectorised vs the same rule as a plain Python loop over the same
   samples, and Megatron-LM's own loop for scale (same run, same machine).
3. Samples/s and tokens/s served by one process from memory-mapped shards.
4. Private and file-backed resident memory after serving, at two corpus sizes.

    .venv/bin/python bench/loader.py [--tokens 1e9] [--serve-tokens 5e7] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from curation.shards import (  # noqa: E402
    file_sha256,
    token_dtype,
    tokens_table,
    write_ipc_atomic,
    write_manifest,
)
from training.data.blend import (  # noqa: E402
    blend_indices,
    blend_indices_reference,
    megatron_greedy_reference,
)
from training.data.dataset import build_blended_dataset  # noqa: E402
from training.data.gpt_dataset import build_sample_indices  # noqa: E402

MTNLG = np.array([0.19336, 0.15652, 0.14336, 0.13017, 0.09446, 0.08962, 0.05689, 0.04771,
                  0.02897, 0.01588, 0.01359, 0.01007, 0.00873, 0.00859, 0.00208])
SEQ_LEN = 2048


def document_lengths(tokens: int, rng: np.random.Generator) -> np.ndarray:
    """Log-normal document lengths (median ~600 tokens, long tail) summing to about `tokens`."""
    lengths = np.maximum(2, rng.lognormal(6.4, 1.0, size=int(tokens / 990) + 1)).astype(np.int64)
    return lengths[:max(1, int(np.searchsorted(np.cumsum(lengths), tokens)))]


def bench_index_build(total_tokens: float) -> dict:
    rng = np.random.default_rng(0)
    weights = MTNLG / MTNLG.sum()
    # Source sizes: the blend reads some sources for several epochs, others partly.
    sizes = total_tokens * weights * rng.uniform(0.3, 2.0, size=len(weights))
    lengths = [document_lengths(s, rng) for s in sizes]
    num_samples = int(total_tokens // SEQ_LEN)
    start = time.perf_counter()
    source, _ = blend_indices(weights, num_samples)
    blend_s = time.perf_counter() - start
    counts = np.bincount(source, minlength=len(weights))
    for k, lens in enumerate(lengths):
        build_sample_indices(np.arange(len(lens)), lens, SEQ_LEN, int(counts[k]), [k])
    total_s = time.perf_counter() - start
    return {"samples": num_samples, "documents": sum(len(x) for x in lengths),
            "blend_s": blend_s, "total_s": total_s, "weights": weights}


def bench_index_extend(total_tokens: float) -> dict:
    """A run's per-source indices grown from half its samples to all of them (what resuming
    with twice the steps does), against building all of them afresh."""
    rng = np.random.default_rng(0)
    weights = MTNLG / MTNLG.sum()
    sizes = total_tokens * weights * rng.uniform(0.3, 2.0, size=len(weights))
    lengths = [document_lengths(s, rng) for s in sizes]
    counts = np.bincount(blend_indices(weights, int(total_tokens // SEQ_LEN))[0],
                         minlength=len(weights))
    half = [build_sample_indices(np.arange(len(x)), x, SEQ_LEN, int(c) // 2, [k])
            for k, (x, c) in enumerate(zip(lengths, counts, strict=True))]
    start = time.perf_counter()
    for k, (x, c) in enumerate(zip(lengths, counts, strict=True)):
        build_sample_indices(np.arange(len(x)), x, SEQ_LEN, int(c), [k], previous=half[k])
    extend_s = time.perf_counter() - start
    start = time.perf_counter()
    for k, (x, c) in enumerate(zip(lengths, counts, strict=True)):
        build_sample_indices(np.arange(len(x)), x, SEQ_LEN, int(c), [k])
    return {"extend_s": extend_s, "fresh_s": time.perf_counter() - start}


def bench_blend_vs_loop(weights: np.ndarray, num_samples: int) -> dict:
    start = time.perf_counter()
    fast = blend_indices(weights, num_samples)
    fast_s = time.perf_counter() - start
    start = time.perf_counter()
    loop = blend_indices_reference(weights, num_samples)
    loop_s = time.perf_counter() - start
    start = time.perf_counter()
    megatron = megatron_greedy_reference(weights, num_samples)
    megatron_s = time.perf_counter() - start
    assert np.array_equal(fast[0], loop[0]) and np.array_equal(fast[1], loop[1])
    return {"fast_s": fast_s, "loop_s": loop_s, "megatron_loop_s": megatron_s,
            "deviation": _max_prefix_deviation(fast[0], weights),
            "megatron_deviation": _max_prefix_deviation(megatron, weights)}


def _max_prefix_deviation(source: np.ndarray, weights: np.ndarray) -> float:
    worst = 0.0
    n = np.arange(1, len(source) + 1)
    for k, w in enumerate(weights):
        worst = max(worst, float(np.abs(np.cumsum(source == k) - w * n).max()))
    return worst


def write_corpus(out: Path, tokens: float, shard_tokens: int = 10_000_000) -> None:
    """One source of synthetic documents as token shards + manifest (no tokenizer needed)."""
    rng = np.random.default_rng(1)
    lengths = document_lengths(tokens, rng)
    dtype = token_dtype(50257)
    source_dir = out / "tokens" / "web"
    source_dir.mkdir(parents=True, exist_ok=True)
    ends = np.cumsum(lengths)
    cuts = np.searchsorted(ends, np.arange(shard_tokens, ends[-1], shard_tokens))
    shards, first = [], 0
    for s, last in enumerate(list(cuts) + [len(lengths)]):
        if last <= first:
            continue
        lens = lengths[first:last]
        flat = rng.integers(1, 50257, size=int(lens.sum()), dtype=dtype)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
        flat[offsets[1:] - 1] = 0
        path = source_dir / f"shard-{s:05d}.arrow"
        write_ipc_atomic(tokens_table([f"web/{i}" for i in range(first, last)], flat, offsets),
                         path)
        shards.append({"file": path.name, "documents": int(last - first),
                       "tokens": int(offsets[-1]), "bytes": path.stat().st_size,
                       "sha256": file_sha256(path)})
        first = last
    write_manifest(source_dir, {"format": "textmill-tokens/1",
                                "tokenizer": {"path": "none", "sha256": "synthetic"},
                                "vocab_size": 50257, "dtype": dtype.name, "eod_id": 0,
                                "shards": shards})


def bench_serving(out: Path, samples: int) -> dict:
    data = build_blended_dataset(out, SEQ_LEN, 0, {"train": samples}, weights={"web": 1.0},
                                 split="100")["train"]
    for i in range(200):  # warm the page cache like a trainer's first steps
        data[i]
    start = time.perf_counter()
    for i in range(len(data)):
        data[i]
    seconds = time.perf_counter() - start
    return {"samples_per_s": len(data) / seconds,
            "tokens_per_s": len(data) * (SEQ_LEN + 1) / seconds}


RSS_SCRIPT = textwrap.dedent("""
    import sys
    from training.data import build_blended_dataset
    data = build_blended_dataset(sys.argv[1], 2048, 0, {"train": 4000}, weights={"web": 1.0},
                                 split="100")["train"]
    for i in range(len(data)):
        data[i]
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(status["RssAnon"].split()[0], status["RssFile"].split()[0])
""")


def resident_memory(out: Path) -> tuple[int, int]:
    """(private, file-backed) resident KiB of a fresh process serving 4000 samples."""
    build_blended_dataset(out, SEQ_LEN, 0, {"train": 4000}, weights={"web": 1.0}, split="100")
    result = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(out)], check=True,
                            capture_output=True, text=True)
    anon, file = result.stdout.split()
    return int(anon), int(file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, default=1e9)
    parser.add_argument("--serve-tokens", type=float, default=5e7)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    build = bench_index_build(args.tokens)
    print(f"index build: {args.tokens:.3g} tokens, 15 sources, {build['documents']:,} documents,"
          f" {build['samples']:,} samples of {SEQ_LEN}: blend {build['blend_s']:.2f} s,"
          f" all indices {build['total_s']:.2f} s (target <= 30 s)")
    grow = bench_index_extend(args.tokens)
    print(f"per-source indices grown from half the samples to all: {grow['extend_s']:.2f} s,"
          f" built afresh: {grow['fresh_s']:.2f} s")
    blend = bench_blend_vs_loop(build["weights"], build["samples"])
    print(f"blending {build['samples']:,} samples: numpy {blend['fast_s']:.3f} s, same rule as"
          f" a Python loop {blend['loop_s']:.2f} s ({blend['loop_s'] / blend['fast_s']:.0f}x),"
          f" Megatron's loop {blend['megatron_loop_s']:.2f} s"
          f" ({blend['megatron_loop_s'] / blend['fast_s']:.0f}x); max prefix deviation"
          f" {blend['deviation']:.3f} samples (Megatron's rule {blend['megatron_deviation']:.3f})")

    workdir = Path(tempfile.mkdtemp(prefix="loader-bench-", dir=args.workdir))
    try:
        large, small = workdir / "large", workdir / "small"
        write_corpus(large, args.serve_tokens)
        write_corpus(small, args.serve_tokens / 10)
        serve = bench_serving(large, samples=20000)
        print(f"serving seq_len {SEQ_LEN}: {serve['samples_per_s']:,.0f} samples/s,"
              f" {serve['tokens_per_s'] / 1e6:.1f} M tokens/s (target >= 5 M)")
        if Path("/proc/self/status").exists():
            for name, out, tokens in [("small", small, args.serve_tokens / 10),
                                      ("large", large, args.serve_tokens)]:
                anon, file = resident_memory(out)
                print(f"resident memory, {name} corpus ({tokens:.3g} tokens): private"
                      f" {anon / 1024:.1f} MiB, file-backed (page cache) {file / 1024:.1f} MiB")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
