"""textmill against datatrove on one corpus with matched stages, 2 workers each.

Stages on both sides: normalize (ftfy) -> Gopher repetition + Gopher quality + C4
(defaults) -> exact dedup -> fuzzy dedup (word 5-grams, the same bands x rows). datatrove
runs in its own virtual environment, which this script creates and fills with `pip
install datatrove` (and the few packages its steps import) when it is missing (never a
textmill dependency); its word tokenizer is a whitespace split (bench/datatrove_side.py).
Runs alternate (textmill first in even pairs, datatrove first in odd ones) so both see
the same machine load.

Prints per part wall seconds, docs/s and the ratio, CPU seconds of every process of each
run, the fuzzy stage's own phases, and the Jaccard of the two kept-id sets with the most
common reasons for the differences; `--baseline DIR` also times another textmill source
tree (say `git archive main` unpacked) in every pair, against this one. `--only-fuzzy`
runs just the fuzzy stage against datatrove's four MinHash stages on the raw corpus (for
the 500k-document measurement).

    .venv/bin/python bench/text_corpus.py /tmp/c50k --docs 50000
    .venv/bin/python bench/vs_datatrove.py /tmp/c50k --work /tmp/vs50k --pairs 2 --one-worker
    .venv/bin/python bench/vs_datatrove.py /tmp/c50k --work /tmp/vs50k --baseline /tmp/main-src
    .venv/bin/python bench/vs_datatrove.py /tmp/c500k --work /tmp/vs500k --only-fuzzy
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SIDE = Path(__file__).resolve().parent / "datatrove_side.py"
BANDS, ROWS, NGRAM = 14, 9, 5  # textmill's choice for threshold 0.8 and 128 permutations
# datatrove and what its readers, filters and dedup steps import (its `processing` and
# `io` extras would also pull NLTK, fastText, trafilatura, datasets, ...).
DATATROVE_PACKAGES = ("datatrove==0.10.1", "ftfy", "regex", "tokenizers", "orjson", "fasteners",
                      "xxhash<4")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def datatrove_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import datatrove, ftfy, orjson, regex, tokenizers, xxhash"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *DATATROVE_PACKAGES],
                   check=True)
    return python


def spec_text(corpus: Path, partition_rows: int, only_fuzzy: bool) -> str:
    stages = "" if only_fuzzy else (
        "  normalize: {}\n"
        # datatrove counts the characters of repeated n-grams after their first occurrence
        "  heuristics: {gopher_quality: {}, c4: {},\n"
        "               gopher_repetition: {dup_ngram_occurrences: repeats}}\n"
        "  exact_dedup: {}\n")
    return (
        "name: vs_datatrove\nseed: 1234\n"
        "sources:\n"
        f"  - {{name: bench, paths: [\"{corpus}/*.jsonl\"], format: jsonl, id_field: id}}\n"
        f"read: {{partition_rows: {partition_rows}}}\n"
        "stages:\n" + stages +
        f"  fuzzy_dedup: {{ngram: {NGRAM}, num_perm: 128, threshold: 0.8, bands: {BANDS},"
        f" rows: {ROWS}}}\n")


def run_textmill(spec: Path, out: Path, workers: int, source: Path | None = None) -> dict:
    """One `curate run`; `source`: another textmill source tree to run instead (with this
    checkout's virtual environment, e.g. `git archive main` unpacked, as the baseline)."""
    shutil.rmtree(out, ignore_errors=True)
    env = None if source is None else {**os.environ, "PYTHONPATH": str(source)}
    wall, cpu = time.perf_counter(), children_cpu()
    subprocess.run([str(ROOT / ".venv" / "bin" / "curate"), "run", str(spec), "--out", str(out),
                    "--workers", str(workers), "--force"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total, cpu = time.perf_counter() - wall, children_cpu() - cpu
    parts = {}
    for manifest in sorted((out / "stages").glob("*/_manifest.json")):
        m = json.loads(manifest.read_text())
        parts[m["stage"]] = {"seconds": m["seconds"], "docs_in": m["totals"]["docs_in"]}
    fuzzy_dir = next((out / "stages").glob("*_fuzzy_dedup"))
    phases = json.loads((fuzzy_dir / "decisions.done.json").read_text())
    kept = set()
    for path in sorted((out / "curated").rglob("*.parquet")):
        kept.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    ledger = {}
    for path in sorted((out / "ledger").glob("*.parquet")):
        table = pq.read_table(path, columns=["id", "stage", "reason", "action"]).to_pylist()
        ledger.update({r["id"]: f"{r['stage']}: {r['reason']}" for r in table
                       if r["action"] == "removed"})
    return {"seconds": total, "cpu_seconds": cpu, "parts": parts, "fuzzy": phases,
            "kept": kept, "ledger": ledger}


def run_datatrove(python: Path, corpus: Path, work: Path, workers: int, only_fuzzy: bool) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    wall, cpu = time.perf_counter(), children_cpu()
    command = [str(python), str(SIDE), str(corpus), str(work), "--workers", str(workers),
               "--bands", str(BANDS), "--rows", str(ROWS), "--ngram", str(NGRAM)]
    result = subprocess.run(command + (["--only-minhash"] if only_fuzzy else []), check=True,
                            capture_output=True, text=True)
    total, cpu = time.perf_counter() - wall, children_cpu() - cpu
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {"seconds": total, "cpu_seconds": cpu, "parts": report["parts"],
            "ids": {k: set(v) for k, v in report["ids"].items()}}


def differences(tm: dict, dt: dict, all_ids: set[str]) -> dict:
    a, b = tm["kept"], dt["ids"]["final"]
    dt_reason = {}
    for doc in a - b:
        if "filtered" in dt["ids"] and doc not in dt["ids"]["filtered"]:
            dt_reason[doc] = "datatrove filters"
        elif "exact_out" in dt["ids"] and doc not in dt["ids"]["exact_out"]:
            dt_reason[doc] = "datatrove exact dedup"
        else:
            dt_reason[doc] = "datatrove minhash"
    return {
        "jaccard": len(a & b) / max(1, len(a | b)), "textmill_kept": len(a),
        "datatrove_kept": len(b), "both": len(a & b), "docs": len(all_ids),
        "only_textmill": collections.Counter(dt_reason.values()).most_common(5),
        "only_datatrove": collections.Counter(tm["ledger"].get(d, "?") for d in b - a)
        .most_common(5),
    }


def dt_part(dt: dict, name: str) -> float:
    return sum(v["seconds"] for k, v in dt["parts"].items() if k.split(":")[0] == name)


def report(pair: int, tm: dict, dt: dict, docs: int, only_fuzzy: bool, one: dict | None) -> None:
    """Per part: each side's own input documents, seconds, docs/s, and datatrove's seconds
    per input document over textmill's (the ratio: > 1 means textmill is faster)."""
    dt_in = {"filters": docs, "exact_dedup": len(dt["ids"].get("filtered", ())),
             "minhash": len(dt["ids"].get("exact_out", ())) or docs}
    tm_parts = tm["parts"]
    rows = [] if only_fuzzy else [
        ("filters (normalize + heuristics)", docs,
         tm_parts["normalize"]["seconds"] + tm_parts["heuristics"]["seconds"],
         dt_in["filters"], dt_part(dt, "filters")),
        ("exact dedup", tm_parts["exact_dedup"]["docs_in"], tm_parts["exact_dedup"]["seconds"],
         dt_in["exact_dedup"], dt_part(dt, "exact_dedup"))]
    rows.append(("fuzzy dedup (datatrove: 4 MinHash stages)", tm_parts["fuzzy_dedup"]["docs_in"],
                 tm_parts["fuzzy_dedup"]["seconds"], dt_in["minhash"], dt_part(dt, "minhash")))
    rows.append(("whole job (process wall)", docs, tm["seconds"], docs, dt["seconds"]))
    print(f"\npair {pair}: {docs} input documents")
    print(f"  {'part':<44}{'tm in':>7}{'tm s':>8}{'tm docs/s':>10}{'dt in':>7}{'dt s':>8}"
          f"{'dt docs/s':>10}{'ratio':>7}")
    for name, t_in, t, d_in, d in rows:
        ratio = (t_in / t) / (d_in / d) if t and d and d_in else float("nan")
        print(f"  {name:<44}{t_in:>7}{t:>8.1f}{t_in / t:>10.0f}{d_in:>7}{d:>8.1f}"
              f"{d_in / d if d else 0:>10.0f}{ratio:>7.2f}")
    print(f"  CPU s, all processes: textmill {tm['cpu_seconds']:.1f}, datatrove "
          f"{dt['cpu_seconds']:.1f} (ratio {dt['cpu_seconds'] / tm['cpu_seconds']:.2f})")
    fuzzy = tm["fuzzy"]
    print(f"  textmill fuzzy phases: {fuzzy['seconds']} ({fuzzy.get('verify_tasks')} "
          f"verification tasks over {fuzzy.get('bins')} bins, components "
          f"{fuzzy.get('components')}, "
          f"{fuzzy.get('candidate_pairs')} pairs, {fuzzy.get('verified_pairs')} verified); stage "
          f"{tm_parts['fuzzy_dedup']['seconds']:.1f} s = "
          f"{tm_parts['fuzzy_dedup']['seconds'] / fuzzy['seconds']['signatures']:.2f}x "
          f"the signature pass")
    print("  datatrove parts: " + ", ".join(f"{k} {v['seconds']:.1f}s/{v['cpu_seconds']:.1f}cpu"
                                           for k, v in dt["parts"].items()))
    if one is not None:
        print(f"  textmill 1 worker: {one['seconds']:.1f} s; 2 workers / 1 worker = "
              f"{one['seconds'] / tm['seconds']:.2f}x")


def compare_baseline(base: dict, tm: dict) -> None:
    """Per stage and whole run: the baseline's seconds, this checkout's, and the ratio."""
    print("  textmill vs baseline (s): " + ", ".join(
        f"{stage} {base['parts'][stage]['seconds']:.1f} -> {part['seconds']:.1f}"
        for stage, part in tm["parts"].items() if stage in base["parts"]))
    print(f"  whole run {base['seconds']:.1f} -> {tm['seconds']:.1f} s "
          f"({base['seconds'] / tm['seconds']:.2f}x), CPU {base['cpu_seconds']:.1f} -> "
          f"{tm['cpu_seconds']:.1f} s ({base['cpu_seconds'] / tm['cpu_seconds']:.2f}x); kept ids "
          f"{'identical' if base['kept'] == tm['kept'] else 'DIFFER'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="a folder of JSONL shards (bench/text_corpus.py)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--first-pair", type=int, default=0,
                        help="number of the first pair (its parity sets who runs first)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--partition-rows", type=int, default=5000)
    parser.add_argument("--only-fuzzy", action="store_true")
    parser.add_argument("--one-worker", action="store_true",
                        help="also time textmill on one worker in every pair")
    parser.add_argument("--baseline", type=Path,
                        help="also time this textmill source tree (e.g. main) in every pair")
    parser.add_argument("--datatrove-venv", type=Path, default=Path("/tmp/textmill-datatrove-venv"))
    args = parser.parse_args()
    corpus = args.corpus.resolve()
    python = datatrove_python(args.datatrove_venv)
    args.work.mkdir(parents=True, exist_ok=True)
    spec = args.work / "spec.yaml"
    spec.write_text(spec_text(corpus, args.partition_rows, args.only_fuzzy))
    all_ids = set()
    for path in sorted(corpus.glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            all_ids.update(json.loads(line)["id"] for line in f)
    results = []
    for pair in range(args.first_pair, args.first_pair + args.pairs):
        runs = {}
        order = ("textmill", "datatrove") if pair % 2 == 0 else ("datatrove", "textmill")
        if args.baseline is not None:
            order = ("baseline", *order) if pair % 2 == 0 else (*order, "baseline")
        for side in order:
            if side == "baseline":
                runs[side] = run_textmill(spec, args.work / "baseline", args.workers,
                                          args.baseline.resolve())
            elif side == "textmill":
                runs[side] = run_textmill(spec, args.work / "textmill", args.workers)
            else:
                runs[side] = run_datatrove(python, corpus, args.work / "datatrove",
                                           args.workers, args.only_fuzzy)
        one = run_textmill(spec, args.work / "textmill-1", 1) if args.one_worker else None
        report(pair, runs["textmill"], runs["datatrove"], len(all_ids), args.only_fuzzy, one)
        if "baseline" in runs:
            compare_baseline(runs["baseline"], runs["textmill"])
        diff = differences(runs["textmill"], runs["datatrove"], all_ids)
        print(f"  kept: textmill {diff['textmill_kept']}, datatrove {diff['datatrove_kept']}, "
              f"both {diff['both']}; Jaccard {diff['jaccard']:.4f}")
        print(f"  kept by textmill only, removed by: {diff['only_textmill']}")
        print(f"  kept by datatrove only, removed by textmill's: {diff['only_datatrove']}")
        results.append({"pair": pair, "diff": diff,
                        **{side: {k: v for k, v in r.items() if k in ("seconds", "cpu_seconds",
                                                                      "parts", "fuzzy")}
                           for side, r in runs.items()},
                        "textmill_one_worker": None if one is None else one["seconds"]})
        sys.stdout.flush()
    (args.work / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
