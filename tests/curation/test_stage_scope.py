"""Stages scoped to sources (`only` / `exempt`), and the ordered stage registry."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from curation.pipeline import enabled_stages, run_pipeline
from curation.report import summary_text
from curation.spec import SpecError, StagesSpec, parse_spec
from curation.stages.heuristics import HeuristicsStage
from curation.stages.language import LanguageStage
from curation.stages.registry import STAGES
from tests.conftest import write_jsonl

PROSE = (
    "The river runs past the old mill and into the valley below. Farmers have worked "
    "these fields for many generations, and their stories are told in the village. "
    "Each spring the water rises with melted snow from the distant mountains. Children "
    "walk to school along the narrow path that follows the bank of the river. In the "
    "evening the lights of the houses shine across the quiet water of the valley."
)
CODE = "int main(void) {\n    return 0;\n}\n" * 5


def problems_of(stages: dict) -> list[str]:
    data = {"name": "t", "sources": [{"name": "web", "paths": ["w"]},
                                     {"name": "code", "paths": ["c"]}], "stages": stages}
    with pytest.raises(SpecError) as info:
        parse_spec(data, check_files=False)
    return info.value.problems


def test_unknown_source_in_scope_is_a_spec_error_with_its_path():
    problems = problems_of({"heuristics": {"only": ["web", "nope"], "c4": {}},
                            "exact_dedup": {"exempt": ["books"]}})
    assert problems == [
        "stages.heuristics.only[1]: no source named 'nope' (sources: web, code)",
        "stages.exact_dedup.exempt[0]: no source named 'books' (sources: web, code)",
    ]


def test_only_and_exempt_together_is_a_spec_error():
    problems = problems_of({"language": {"only": ["web"], "exempt": ["code"]}})
    assert problems == ["stages.language: give `only` or `exempt`, not both"]


def test_the_spec_and_the_pipeline_follow_the_registry():
    names = [cls.name for cls in STAGES]
    assert list(StagesSpec.model_fields) == names
    every = {name: {} for name in names}
    every["quality"] = {"positive": ["web"], "negative": ["code"]}
    every["decontaminate"] = {"tasks": [{"name": "t", "paths": ["t"], "fields": ["q"]}]}
    every["select"] = {"method": "random", "budget": {"docs": 1}}
    spec = parse_spec({"name": "t", "sources": [{"name": "web", "paths": ["w"]},
                                                {"name": "code", "paths": ["c"]}],
                       "stages": every}, check_files=False)
    assert [(i, s.name) for i, s in enabled_stages(spec)] == list(enumerate(names, start=1))


def docs_of(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"id": [str(i) for i in range(len(rows))],
                         "source": [s for s, _ in rows], "text": [t for _, t in rows],
                         "meta": "{}"})


def test_heuristics_leave_out_of_scope_sources_untouched():
    docs = docs_of([("web", CODE), ("code", CODE), ("web", PROSE)])
    for scope in ({"only": ["web"]}, {"exempt": ["code"]}):
        stage = HeuristicsStage({**scope, "c4": {"min_sentences": None}}, spec=None)
        out = stage.process(docs, 0, None)
        assert sorted(out.kept["id"]) == ["1", "2"]
        assert out.kept.set_index("id").loc["1", "text"] == CODE  # not rewritten either
        assert out.ledger["id"].tolist() == ["0"]
        assert out.ledger["reason"].tolist() == ["c4.empty_after_line_filter"]
    out = HeuristicsStage({"c4": {"min_sentences": None}}, spec=None).process(docs, 0, None)
    assert out.kept["id"].tolist() == ["2"]  # unscoped: the code goes too


def test_language_exempt_source_is_annotated_not_filtered():
    docs = docs_of([("web", CODE), ("code", CODE), ("web", PROSE)])
    spec = parse_spec({"name": "t", "sources": [{"name": "web", "paths": ["w"]},
                                                {"name": "code", "paths": ["c"]}]},
                      check_files=False)
    out = LanguageStage({"exempt": ["code"], "min_score": 0.99}, spec).process(docs, 0, None)
    kept = out.kept.set_index("id")
    assert sorted(kept.index) == ["1", "2"] and out.ledger["id"].tolist() == ["0"]
    assert kept.loc["2", "lang"] == "en"
    assert set(kept.columns) >= {"lang", "lang_score"} and kept["lang"].notna().all()


def write_corpus(root: Path) -> None:
    write_jsonl(root / "web.jsonl", [{"id": f"w{i}", "text": PROSE + f" Page {i}."}
                                     for i in range(3)] + [{"id": "w-code", "text": CODE}])
    write_jsonl(root / "code.jsonl", [{"id": "c0", "text": CODE},
                                      {"id": "c1", "text": PROSE + " Page 0."}])


def test_pipeline_scopes_stages_and_reports_which_ran(tmp_path, dask_cluster_client):
    write_corpus(tmp_path)
    spec = parse_spec({
        "name": "scoped",
        "sources": [{"name": "web", "paths": ["web.jsonl"], "id_field": "id", "priority": 1},
                    {"name": "code", "paths": ["code.jsonl"], "id_field": "id"}],
        "stages": {"heuristics": {"only": ["web"], "c4": {"min_sentences": None}},
                   "exact_dedup": {}},
    }, base_dir=tmp_path)
    out = tmp_path / "out"
    run_pipeline(spec, out, dask_cluster_client)
    curated = pd.concat([pq.read_table(p).to_pandas()
                         for p in sorted((out / "curated").rglob("*.parquet"))])
    # heuristics removed the web's code only; exact dedup ran across both sources
    assert sorted(curated["id"]) == ["c0", "w0", "w1", "w2"]
    ledger = pd.concat([pq.read_table(p).to_pandas()
                        for p in sorted((out / "ledger").glob("*.parquet"))])
    assert dict(zip(ledger["id"], ledger["reason"], strict=True)) == {
        "w-code": "c4.empty_after_line_filter", "c1": "exact_duplicate"}
    manifest = json.loads((out / "stages" / "03_heuristics" / "_manifest.json").read_text())
    assert manifest["totals"]["skipped_sources"] == ["code"]
    table = summary_text(out).splitlines()
    assert table[0].split()[:3] == ["stage", "source", "ran"]
    ran = {tuple(line.split()[:3]) for line in table[2:]}
    assert {("heuristics", "code", "no"), ("heuristics", "web", "yes"),
            ("heuristics", "(all)", "1"), ("exact_dedup", "code", "yes"),
            ("exact_dedup", "(all)", "all")} <= ran


def test_dedup_exempt_source_neither_loses_nor_wins(tmp_path, dask_cluster_client):
    write_corpus(tmp_path)
    spec = parse_spec({
        "name": "scoped",
        "sources": [{"name": "web", "paths": ["web.jsonl"], "id_field": "id"},
                    {"name": "code", "paths": ["code.jsonl"], "id_field": "id",
                     "priority": 5}],
        "stages": {"exact_dedup": {"exempt": ["code"]}},
    }, base_dir=tmp_path)
    out = tmp_path / "out"
    run_pipeline(spec, out, dask_cluster_client)
    curated = pd.concat([pq.read_table(p).to_pandas()
                         for p in sorted((out / "curated").rglob("*.parquet"))])
    # c1 (higher priority) would have won over w0; exempt, it is not even compared
    assert sorted(curated["id"]) == ["c0", "c1", "w-code", "w0", "w1", "w2"]
