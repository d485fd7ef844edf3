"""Documents/s per curation stage on the demo corpus, at 1 and 2 workers.

References measured in the same run, one core, on the same documents:
  - plain `ftfy.fix_text` per document (what the normalize stage replaces),
  - plain `langdetect.detect` per document (what the language stage replaces),
and the accuracy of our language stage vs langdetect on ../shared/data/langid-sample.jsonl.

    .venv/bin/python bench/curate_stages.py [--scale 1.0] [--ref-docs 400]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]


def stage_rates(out: Path) -> dict[str, dict]:
    rates = {}
    for manifest_path in sorted((out / "stages").glob("*/_manifest.json")):
        m = json.loads(manifest_path.read_text())
        docs = m["totals"]["docs_in"]
        rates[m["stage"]] = {"docs": docs, "seconds": m["seconds"],
                             "docs_per_s": docs / m["seconds"] if m["seconds"] else 0.0}
    return rates


def read_docs(out: Path) -> pd.DataFrame:
    files = sorted((out / "stages" / "00_read" / "data").glob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def time_it(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def references(docs: pd.DataFrame, ref_docs: int) -> dict:
    import ftfy
    import langdetect
    from langdetect import DetectorFactory

    from curation.stages.language import detect_languages
    from curation.stages.normalize import NormalizeConfig, NormalizeStage

    texts = docs["text"].tolist()
    # Warm-ups: ftfy's and the language tables' one-off costs per process are not per-document.
    [ftfy.fix_text(t) for t in texts[:20]]
    detect_languages(texts[:20])
    t_ftfy, _ = time_it(lambda: [ftfy.fix_text(t) for t in texts])
    stage = NormalizeStage(NormalizeConfig(), None)
    t_norm, _ = time_it(stage.process, docs, 0, Path("."))

    sample = texts[:ref_docs]
    DetectorFactory.seed = 0

    def plain_langdetect():
        out = []
        for t in sample:
            try:
                out.append(langdetect.detect(t))
            except langdetect.LangDetectException:
                out.append("")
        return out
    t_ld, _ = time_it(plain_langdetect)
    t_ours, _ = time_it(detect_languages, texts)
    return {
        "ftfy_loop_docs_per_s": len(texts) / t_ftfy,
        "normalize_stage_docs_per_s": len(texts) / t_norm,
        "langdetect_loop_docs_per_s": len(sample) / t_ld,
        "language_bulk_docs_per_s": len(texts) / t_ours,
    }


def langid_accuracy() -> dict | None:
    import langdetect
    from langdetect import DetectorFactory

    from curation.stages.language import detect_languages

    path = ROOT.parent / "shared" / "data" / "langid-sample.jsonl"
    if not path.exists():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    texts, labels = [r["text"] for r in rows], [r["lang"] for r in rows]
    DetectorFactory.seed = 0
    plain = []
    for t in texts:
        try:
            plain.append(langdetect.detect(t))
        except langdetect.LangDetectException:
            plain.append("")
    ours, _ = detect_languages(texts)
    return {"docs": len(texts),
            "ours": sum(a == b for a, b in zip(ours, labels, strict=True)) / len(texts),
            "langdetect": sum(a == b for a, b in zip(plain, labels, strict=True)) / len(texts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--ref-docs", type=int, default=400)
    args = parser.parse_args()

    from curation.cluster import dask_client
    from curation.demo_corpus import build_demo_corpus
    from curation.pipeline import run_pipeline
    from curation.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_demo_corpus(tmp / "demo_data", scale=args.scale)
        spec_text = (ROOT / "corpus_specs" / "demo.yaml").read_text()
        (tmp / "specs").mkdir()
        (tmp / "specs" / "demo.yaml").write_text(spec_text)
        spec = load_spec(tmp / "specs" / "demo.yaml")
        per_workers = {}
        for workers in (1, 2):
            with dask_client(workers=workers, quiet=True) as client:
                run_pipeline(spec, tmp / f"out{workers}", client, force=True)
            per_workers[workers] = stage_rates(tmp / f"out{workers}")
        refs = references(read_docs(tmp / "out1"), args.ref_docs)
        accuracy = langid_accuracy()

    print(f"{'stage':<16}{'docs':>8}{'1 worker docs/s':>18}{'2 workers docs/s':>18}{'ratio':>8}")
    for stage, r1 in per_workers[1].items():
        r2 = per_workers[2][stage]
        ratio = r2["docs_per_s"] / r1["docs_per_s"] if r1["docs_per_s"] else 0.0
        print(f"{stage:<16}{r1['docs']:>8}{r1['docs_per_s']:>18.0f}{r2['docs_per_s']:>18.0f}"
              f"{ratio:>8.2f}")
    print("\nOne core, same documents:")
    print(f"  plain ftfy.fix_text loop   {refs['ftfy_loop_docs_per_s']:>10.0f} docs/s")
    print(f"  normalize stage            {refs['normalize_stage_docs_per_s']:>10.0f} docs/s  "
          f"({refs['normalize_stage_docs_per_s'] / refs['ftfy_loop_docs_per_s']:.1f}x)")
    print(f"  plain langdetect.detect    {refs['langdetect_loop_docs_per_s']:>10.0f} docs/s")
    print(f"  language stage (bulk)      {refs['language_bulk_docs_per_s']:>10.0f} docs/s  "
          f"({refs['language_bulk_docs_per_s'] / refs['langdetect_loop_docs_per_s']:.1f}x)")
    if accuracy:
        print(f"\nlangid accuracy on {accuracy['docs']} labelled docs: ours "
              f"{accuracy['ours']:.3f}, langdetect {accuracy['langdetect']:.3f}")


if __name__ == "__main__":
    main()
