"""The demo corpus: deterministic, scaled, and every planted case present with known truth."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import ftfy
import pyarrow.parquet as pq
import pytest
import zstandard

from curation.demo.web import NEAR_COPY_JACCARDS, kind_counts
from curation.demo_corpus import build_demo_corpus

SMALL = 0.1


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo_small")
    return out, build_demo_corpus(out, scale=SMALL)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo_full")
    return out, build_demo_corpus(out)


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _jsonl_lines(path: Path) -> list[str]:
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    elif path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("utf-8").splitlines()


def _problem(line: str) -> str | None:
    """What is wrong with a JSONL line as a document record, if anything."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return "bad_json"
    if not isinstance(record, dict):
        return "non_object"
    if "text" not in record:
        return "missing_text"
    if not isinstance(record["text"], str):
        return "non_string_text"
    return None


def _documents(root: Path, summary: dict) -> dict[str, list[dict]]:
    """Valid records per source, each with its file and (1-based) line or row."""
    docs: dict[str, list[dict]] = {}
    for source, info in summary["sources"].items():
        docs[source] = []
        for name in info["files"]:
            if info["format"] == "parquet":
                for row in pq.read_table(root / name).to_pylist():
                    docs[source].append({**row, "file": name})
                continue
            for number, line in enumerate(_jsonl_lines(root / name), start=1):
                if _problem(line) is None:
                    docs[source].append({**json.loads(line), "file": name, "line": number})
    return docs


def _web_by_id(root: Path, summary: dict) -> dict[str, str]:
    return {doc["id"]: doc["text"] for doc in _documents(root, summary)["web"]}


def _resolve(ref: dict, docs: dict[str, list[dict]]) -> str:
    for doc in docs[ref["source"]]:
        if ("id" in ref and doc.get("id") == ref["id"]) or (
            "id" not in ref and doc["file"] == ref["file"] and doc["line"] == ref["line"]
        ):
            return doc["text"]
    raise AssertionError(f"planted reference {ref} not found")


def _shingle_jaccard(a: str, b: str, n: int = 5) -> float:
    def shingles(text: str) -> set:
        words = text.lower().split()
        return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}

    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def test_two_builds_are_byte_identical(small, tmp_path):
    root, _ = small
    build_demo_corpus(tmp_path / "again", scale=SMALL)
    first, second = _file_hashes(root), _file_hashes(tmp_path / "again")
    assert first == second
    assert {"demo_corpus.json", "tasks/demo_qa.jsonl"} <= set(first)


def test_summary_matches_written_files(small):
    root, summary = small
    assert json.loads((root / "demo_corpus.json").read_text()) == summary
    hashes = _file_hashes(root)
    for name, info in summary["files"].items():
        assert hashes[name] == info["sha256"]
        assert (root / name).stat().st_size == info["bytes"]
    assert len(summary["sources"]["pydocs"]["files"]) >= 2
    assert all(name.endswith(".jsonl.zst") for name in summary["sources"]["pydocs"]["files"])
    assert all(name.endswith(".jsonl.gz") for name in summary["sources"]["docstrings"]["files"])


def test_records_parse_except_the_planted_malformed_ones(small):
    root, summary = small
    found = []
    for source in ("pydocs", "docstrings"):
        for name in summary["sources"][source]["files"]:
            for number, line in enumerate(_jsonl_lines(root / name), start=1):
                problem = _problem(line)
                if problem:
                    found.append({"source": source, "file": name, "line": number, "kind": problem})
    assert found == summary["malformed"]
    assert {m["kind"] for m in found} == {
        "bad_json",
        "non_object",
        "missing_text",
        "non_string_text",
    }
    docs = _documents(root, summary)
    for source, info in summary["sources"].items():
        assert len(docs[source]) == info["documents"]
    assert all(set(d) == {"id", "text", "title", "file", "line"} for d in docs["pydocs"])
    assert all(set(d) == {"text", "module", "file", "line"} for d in docs["docstrings"])
    assert all(len(d["text"].split()) >= 50 for d in docs["docstrings"])
    web_ids = [d["id"] for d in docs["web"]]
    assert len(set(web_ids)) == len(web_ids)


@pytest.mark.parametrize("fixture", ["small", "full"])
def test_every_planted_kind_present_in_the_expected_number(fixture, request):
    root, summary = request.getfixturevalue(fixture)
    expected = kind_counts(summary["scale"])
    planted_web = {kind: n for kind, n in summary["planted"].items() if kind != "malformed_records"}
    assert planted_web == {kind: n for kind, n in expected.items() if kind != "prose"}
    web = _web_by_id(root, summary)
    planted_ids = [entry["id"] for entries in summary["web_plan"].values() for entry in entries]
    assert len(planted_ids) == len(set(planted_ids)) and set(planted_ids) <= set(web)
    assert (
        summary["sources"]["web"]["documents"] == len(web) == len(planted_ids) + expected["prose"]
    )
    assert summary["planted"]["malformed_records"] == 4


def test_scale_multiplies_document_counts(small, full):
    _, small_summary = small
    _, full_summary = full
    for source in ("pydocs", "docstrings", "web"):
        ratio = (
            small_summary["sources"][source]["documents"]
            / full_summary["sources"][source]["documents"]
        )
        assert ratio == pytest.approx(SMALL, abs=0.02)
    assert 1500 <= full_summary["documents_total"] <= 5000
    assert 2e6 <= full_summary["web_text_bytes"] <= 4e6
    assert sum(info["bytes"] for info in full_summary["files"].values()) < 5e6
    with pytest.raises(ValueError, match="scale"):
        build_demo_corpus(Path("unused"), scale=0)


def test_past_scale_1_only_the_web_grows(full, tmp_path):
    """pydocs and docstrings hold all the stdlib offers at 1.0; at 3 the web triples and its
    copies of those sources are capped at a share of them (there is only so much to copy)."""
    _, full_summary = full
    summary = build_demo_corpus(tmp_path, scale=3)
    originals = 0
    for source in ("pydocs", "docstrings"):
        documents = summary["sources"][source]["documents"]
        assert documents == full_summary["sources"][source]["documents"]
        originals += documents
    requested = kind_counts(3)
    assert summary["planted"]["exact_copy_cross_source"] == min(
        requested["exact_copy_cross_source"], originals // 4)
    assert summary["planted"]["near_copy_cross_source"] == min(
        requested["near_copy_cross_source"], originals // 3)
    web = summary["sources"]["web"]["documents"]
    assert web > 2.5 * full_summary["sources"]["web"]["documents"]


def test_exact_copies_equal_their_originals(small):
    root, summary = small
    docs = _documents(root, summary)
    web = _web_by_id(root, summary)
    for kind in ("exact_copy_cross_source", "exact_copy_web"):
        for entry in summary["web_plan"][kind]:
            assert web[entry["id"]] == _resolve(entry["of"], docs)


@pytest.mark.parametrize("fixture", ["small", "full"])
def test_near_copies_have_the_intended_jaccard(fixture, request):
    root, summary = request.getfixturevalue(fixture)
    docs = _documents(root, summary)
    web = _web_by_id(root, summary)
    targets = set()
    for kind in ("near_copy_cross_source", "near_copy_web"):
        for entry in summary["web_plan"][kind]:
            measured = _shingle_jaccard(web[entry["id"]], _resolve(entry["of"], docs))
            assert measured == pytest.approx(entry["intended_jaccard"], abs=0.03)
            assert measured == pytest.approx(entry["measured_jaccard"], abs=1e-4)
            targets.add(entry["intended_jaccard"])
    assert targets == set(NEAR_COPY_JACCARDS)


def test_foreign_pages_are_detected_as_their_language(small):
    langdetect = pytest.importorskip("langdetect")
    langdetect.DetectorFactory.seed = 0
    root, summary = small
    web = _web_by_id(root, summary)
    entries = summary["web_plan"]["foreign"]
    assert {e["lang"] for e in entries} == {"es", "de", "fr", "it", "nl"}
    for entry in entries:
        assert langdetect.detect(web[entry["id"]]) == entry["lang"], entry["id"]
    prose_ids = sorted(set(web) - {e["id"] for v in summary["web_plan"].values() for e in v})
    assert all(langdetect.detect(web[i]) == "en" for i in prose_ids[:20])


def test_mojibake_pages_are_repaired_by_ftfy(small):
    root, summary = small
    web = _web_by_id(root, summary)
    garbled = re.compile("Ã|â€|â\x80|Â")
    for entry in summary["web_plan"]["mojibake"]:
        text = web[entry["id"]]
        assert garbled.search(text), entry["id"]
        repaired = ftfy.fix_text(text)
        assert not garbled.search(repaired) and re.search("[éïçêñãöû]", repaired), entry["id"]


def _task_ngrams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_task_text_appears_only_in_the_contaminated_pages(full):
    root, summary = full
    tasks = [
        json.loads(line) for line in (root / summary["tasks"]["file"]).read_text().splitlines()
    ]
    assert 30 <= len(tasks) == summary["tasks"]["items"] <= 60
    assert all(set(t) == {"question", "context", "answer"} for t in tasks)
    assert all(t["answer"] in t["context"] and "_____" in t["question"] for t in tasks)
    task_grams = set().union(*(_task_ngrams(t["question"] + " \n " + t["context"]) for t in tasks))
    contaminated = {e["id"]: e for e in summary["web_plan"]["contaminated"]}
    hits = set()
    for source, docs in _documents(root, summary).items():
        for doc in docs:
            if _task_ngrams(doc["text"]) & task_grams:
                hits.add(
                    doc.get("id") if source == "web" else f"{source}:{doc['file']}:{doc['line']}"
                )
    assert hits == set(contaminated)
    web = _web_by_id(root, summary)
    for page_id, entry in contaminated.items():
        text, passage = web[page_id], entry["passage"]
        assert len(passage.split()) >= 13 and passage in tasks[entry["task"]]["context"]
        start = text.index(passage)
        assert 200 < start and start + len(passage) < len(text) - 200  # mid-document


def test_junk_pages_show_what_their_rules_look_for(small):
    root, summary = small
    web = _web_by_id(root, summary)
    plan = summary["web_plan"]

    def pages(kind: str) -> list[str]:
        return [web[e["id"]] for e in plan[kind]]

    assert all("lorem ipsum" in p.lower() for p in pages("lorem_ipsum"))
    for page in pages("boilerplate_lines") + pages("boilerplate_page"):
        assert re.search(r"cookie|javascript", page, re.IGNORECASE)
    for page in pages("bullets"):
        lines = page.splitlines()
        assert sum(line[0] in "•-*·▪" for line in lines) / len(lines) > 0.9
    for page in pages("symbol_soup"):
        words = page.split()
        symbols = sum(w.startswith("#") or "..." in w for w in words)
        assert symbols / len(words) > 0.1 or sum(w.isalpha() for w in words) / len(words) < 0.8
    for page in pages("repetitive"):
        words = page.split()
        grams = [" ".join(words[i : i + 4]) for i in range(len(words) - 3)]
        assert len(set(grams)) / len(grams) < 0.7
    for page in pages("keyword_spam") + pages("seo"):
        words = page.lower().split()
        assert len(set(words)) / len(words) < 0.5


def test_the_corpus_does_not_depend_on_what_else_is_imported(tmp_path):
    """transformers patches logging.Logger at import; the docstrings must come from source."""
    import subprocess
    import sys

    script = ("import sys; from pathlib import Path\n"
              "if sys.argv[2] == 'heavy':\n    import transformers, torch  # noqa: F401\n"
              "from curation.demo_corpus import build_demo_corpus\n"
              "build_demo_corpus(Path(sys.argv[1]), scale=0.05)\n")
    digests = []
    for mode in ("plain", "heavy"):
        out = tmp_path / mode
        subprocess.run([sys.executable, "-c", script, str(out), mode], check=True,
                       cwd=tmp_path, capture_output=True)
        digests.append({p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(out.rglob("*")) if p.is_file()})
    assert digests[0] == digests[1]
