"""Language identification: bulk `detect_languages` vs the plain `langdetect.detect` loop.

Both run in this process on one core (BLAS pinned to one thread, as on a Dask worker),
on the labelled sample (as shipped, and repaired by ftfy as the normalize stage would)
and on paragraphs of Python's own docs (all English). Prints docs/s (CPU time and wall
time), the speed-up and accuracy of both; `--write` records the table in
bench/results/langid.md.

    .venv/bin/python bench/langid.py [--write]
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from pydoc_data.topics import topics  # noqa: E402

import ftfy  # noqa: E402
import langdetect  # noqa: E402
import numpy as np  # noqa: E402
from langdetect import DetectorFactory  # noqa: E402

from curation.language.langid_profiles import load_profiles  # noqa: E402
from curation.stages.language import detect_languages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / ".." / "shared" / "data" / "langid-sample.jsonl"
RESULTS = ROOT / "bench" / "results" / "langid.md"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def langdetect_loop(texts):
    def detect(text):
        try:
            return langdetect.detect(text)
        except langdetect.LangDetectException:  # no features
            return ""

    return np.array([detect(text) for text in texts])


def datasets():
    out = []
    if SAMPLE.exists():
        rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
        gold = np.array([row["lang"] for row in rows])
        texts = [row["text"] for row in rows]
        out.append(("langid sample (as shipped)", texts, gold))
        out.append(("langid sample (ftfy.fix_text)", [ftfy.fix_text(t) for t in texts], gold))
    else:
        print(f"note: {SAMPLE} not found; only Python docs are measured")
    paragraphs = [p for key in sorted(topics) for p in topics[key].split("\n\n") if len(p) > 200]
    out.append(("Python docs paragraphs (en)", paragraphs, np.full(len(paragraphs), "en")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = parser.parse_args()

    DetectorFactory.seed = 0
    _, load_wall, _ = timed(load_profiles)  # once per process; not counted below
    langdetect_loop(["warm up langdetect's own profile loading"])

    lines = [
        "| data | docs | chars | langdetect docs/s (cpu / wall) | bulk docs/s (cpu / wall) "
        "| speed-up (cpu / wall) | langdetect acc | bulk acc | agree |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, texts, gold in datasets():
        reference, ref_wall, ref_cpu = timed(lambda texts=texts: langdetect_loop(texts))
        (langs, _), wall, cpu = timed(lambda texts=texts: detect_languages(texts))
        n = len(texts)
        lines.append(
            f"| {name} | {n} | {sum(map(len, texts))} "
            f"| {n / ref_cpu:.0f} / {n / ref_wall:.0f} | {n / cpu:.0f} / {n / wall:.0f} "
            f"| {ref_cpu / cpu:.1f}x / {ref_wall / wall:.1f}x "
            f"| {(reference == gold).mean():.4f} | {(langs == gold).mean():.4f} "
            f"| {(reference == langs).mean():.4f} |"
        )
        print(lines[-1], flush=True)

    header = [
        "# Language identification: bulk profiles vs `langdetect.detect`",
        "",
        "Command: `.venv/bin/python bench/langid.py --write` (one process, one core: BLAS "
        "pinned to 1 thread; langdetect seeded with `DetectorFactory.seed = 0`).",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} cores shared with other jobs, so wall times are noisy; CPU time "
        "is the fairer per-core figure.",
        f"Profile tables built once per process in {load_wall:.2f} s (not counted).",
        "",
    ]
    footer = [
        "",
        "Accuracy is against the sample's labels (Debian manual pages: several labelled "
        "pages are untranslated English, and the non-Latin pages are double-encoded as "
        "shipped, which ftfy partly repairs). Python docs paragraphs are all English; "
        "their accuracy is the fraction tagged `en` (the rest are grammar rules and code).",
    ]
    report = "\n".join(header + lines + footer) + "\n"
    print(report)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(report, encoding="utf-8")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
