"""datatrove's side of bench/vs_datatrove.py; run by the datatrove virtual environment's
Python (datatrove is never a textmill dependency).

Stages matched to textmill's: ftfy (normalize) -> Gopher repetition, Gopher quality, C4
(heuristics) -> exact dedup (3 steps) -> MinHash dedup (signatures, buckets, cluster,
filter). Every word tokenizer is a whitespace split with textmill's sentence-end rule:
the default ones need model downloads. Prints one JSON object: wall and CPU seconds per
part, and the kept ids.

    VENV/bin/python bench/datatrove_side.py CORPUS WORK --workers 2 --bands B --rows R
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import time
from pathlib import Path

from datatrove.utils import word_tokenizers
from datatrove.utils.word_tokenizers import WordTokenizer

# textmill's C4 sentence end (curation/heuristics/c4.py): terminal punctuation, optionally
# closed by quotes or a bracket, then whitespace or the end of the text.
SENTENCE_END = re.compile(r"[.!?]+[\"'”’)]*(\s+|$)")


class WhitespaceTokenizer(WordTokenizer):
    """Words split on whitespace; sentences end where textmill's C4 rule says they do."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text[a:b] for a, b in self.span_tokenize(text)]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for match in SENTENCE_END.finditer(text):
            if text[start:match.end()].strip():
                spans.append((start, match.end()))
            start = match.end()
        if text[start:].strip():
            spans.append((start, len(text)))
        return spans


def _whitespace(language_or_tok):
    return WhitespaceTokenizer("en")


word_tokenizers.load_word_tokenizer = _whitespace
import datatrove.pipeline.dedup.minhash as _minhash  # noqa: E402

_minhash.load_word_tokenizer = _whitespace

from datatrove.executor import LocalPipelineExecutor  # noqa: E402
from datatrove.pipeline.dedup import (  # noqa: E402
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,  # noqa: E402
)
from datatrove.pipeline.dedup.exact_dedup import (  # noqa: E402
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets  # noqa: E402
from datatrove.pipeline.filters import (  # noqa: E402
    C4QualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.formatters import FTFYFormatter  # noqa: E402
from datatrove.pipeline.readers import JsonlReader  # noqa: E402
from datatrove.pipeline.writers import JsonlWriter  # noqa: E402


def cpu_seconds() -> float:
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def reader(folder: Path, glob: str = "*.jsonl*"):
    return JsonlReader(str(folder), glob_pattern=glob, id_key="id", text_key="text")


def writer(folder: Path):
    return JsonlWriter(str(folder), compression=None)


def text_of(doc):
    return doc.text.encode("utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("work", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bands", type=int, default=14)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--only-minhash", action="store_true",
                        help="the four MinHash stages on the raw corpus, nothing else")
    args = parser.parse_args()
    work, workers = args.work, args.workers
    tasks = len(list(args.corpus.glob("*.jsonl")))
    logs = str(work / "logs")
    parts: dict[str, dict] = {}

    def run(part: str, pipeline, n_tasks: int) -> None:
        wall, cpu = time.perf_counter(), cpu_seconds()
        LocalPipelineExecutor(pipeline=pipeline, tasks=n_tasks, workers=min(workers, n_tasks),
                              logging_dir=f"{logs}/{part}", start_method="fork",
                              skip_completed=False).run()
        parts[part] = {"seconds": time.perf_counter() - wall, "cpu_seconds": cpu_seconds() - cpu}

    dedup_input = args.corpus
    if not args.only_minhash:
        exact = ExactDedupConfig(content_getter=text_of)
        run("filters:all", [reader(args.corpus), FTFYFormatter(), GopherRepetitionFilter(),
                        GopherQualityFilter(), C4QualityFilter(), writer(work / "filtered"),
                        ExactDedupSignature(str(work / "exact_sigs"), config=exact)], tasks)
        run("exact_dedup:find", [ExactFindDedups(str(work / "exact_sigs"),
                                                 str(work / "exact_dups"), config=exact)], 1)
        run("exact_dedup:filter", [reader(work / "filtered"),
                                   ExactDedupFilter(str(work / "exact_dups"), config=exact),
                                   writer(work / "exact_out")], tasks)
        dedup_input = work / "exact_out"
    config = MinhashConfig(n_grams=args.ngram, num_buckets=args.bands,
                           hashes_per_bucket=args.rows)
    run("minhash:signatures", [reader(dedup_input),
                               MinhashDedupSignature(str(work / "mh_sigs"), config=config)],
        tasks)
    run("minhash:buckets", [MinhashDedupBuckets(str(work / "mh_sigs"), str(work / "mh_buckets"),
                                                config=config)], args.bands)
    run("minhash:cluster", [MinhashDedupCluster(str(work / "mh_buckets"),
                                                str(work / "mh_remove"), config=config)], 1)
    run("minhash:filter", [reader(dedup_input), MinhashDedupFilter(str(work / "mh_remove")),
                           writer(work / "final")], tasks)

    def ids(folder: Path) -> list[str]:
        out = []
        for path in sorted(folder.glob("*.jsonl")):
            with open(path, encoding="utf-8") as f:
                out += [json.loads(line)["id"] for line in f]
        return out

    stages = {"final": ids(work / "final")}
    if not args.only_minhash:
        stages |= {"filtered": ids(work / "filtered"), "exact_out": ids(work / "exact_out")}
    print(json.dumps({"parts": parts, "ids": stages, "pid": os.getpid()}))


if __name__ == "__main__":
    main()
