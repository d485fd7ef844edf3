"""The spec: every problem reported at once with its YAML path; shipped specs validate."""

from __future__ import annotations

import pytest
import yaml

from curation.cli import main as curate
from curation.spec import SpecError, load_spec, parse_spec
from tests.conftest import ROOT, write_jsonl


def minimal(**overrides) -> dict:
    spec = {"name": "t", "sources": [{"name": "a", "paths": ["a/*.jsonl"]}]}
    spec.update(overrides)
    return spec


def problems_of(data, **kw) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, check_files=False, **kw)
    return info.value.problems


def test_shipped_specs_validate():
    mtnlg = load_spec(ROOT / "corpus_specs" / "mtnlg_530b.yaml", check_files=False)
    weights = {s.name: s.weight for s in mtnlg.sources}
    assert len(weights) == 15
    assert weights["openwebtext2"] == 0.19336 and weights["nih-exporter"] == 0.00208
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-4)
    # MT-NLG filtered only its own Common Crawl snapshots; code keeps any language
    snapshots = ["cc-2021-04", "cc-2020-50"]
    assert mtnlg.stages.heuristics.only == snapshots and mtnlg.stages.quality.only == snapshots
    assert mtnlg.stages.language.exempt == ["github"]
    assert mtnlg.stages.exact_dedup.only is None and mtnlg.stages.exact_dedup.exempt is None
    demo = load_spec(ROOT / "corpus_specs" / "demo.yaml", check_files=False)
    assert demo.stages.exact_dedup is not None


def test_every_problem_listed_at_once_with_its_path():
    data = minimal(sources=[
        {"name": "a", "paths": ["x"], "weight": 0.5},
        {"name": "b", "paths": ["y"], "weight": 0.5},
        {"name": "c", "paths": ["z"], "weight": -1, "colour": "red"},
    ], stages={"language": {"min_score": 0.8, "bogus": 1}})
    problems = problems_of(data)
    assert any(p.startswith("sources[2].weight:") and "greater than 0" in p for p in problems)
    assert any(p.startswith("sources[2].colour: unknown key") and "allowed:" in p
               and "weight" in p for p in problems)
    assert any(p.startswith("stages.language.bogus: unknown key") for p in problems)
    assert len(problems) == 3


def test_missing_required_and_wrong_types():
    problems = problems_of({"sources": [{"name": "a", "paths": "not-a-list"}], "seed": "x"})
    assert any(p.startswith("name:") for p in problems)
    assert any(p.startswith("seed:") for p in problems)
    assert any(p.startswith("sources[0].paths:") for p in problems)


def test_cross_field_rules():
    data = minimal(sources=[
        {"name": "a", "paths": ["x"], "weight": 1.0},
        {"name": "a", "paths": ["y"]},
    ], stages={"quality": {"positive": ["a"], "negative": ["nope"]}})
    problems = problems_of(data)
    assert "sources[1].name: duplicate source name 'a'" in problems
    assert any(p.startswith("stages.quality.negative[0]: no source named 'nope'")
               for p in problems)
    assert any(p.startswith("sources[1]: no `weight` or `epochs`") for p in problems)


@pytest.mark.parametrize("name", ["../escape", "a/b", ".."])
def test_source_names_cannot_escape_the_output_directory(name):
    problems = problems_of(minimal(sources=[{"name": name, "paths": ["x"]}]))
    assert any(p.startswith("sources[0].name:") and "letters, digits" in p for p in problems)


def test_weight_and_epochs_are_exclusive():
    problems = problems_of(minimal(sources=[{"name": "a", "paths": ["x"], "weight": 1,
                                              "epochs": 2}]))
    assert any("not both" in p for p in problems)


def test_missing_files_are_reported_per_source(tmp_path):
    write_jsonl(tmp_path / "a" / "one.jsonl", [{"text": "hello"}])
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(minimal(sources=[
        {"name": "a", "paths": ["a/*.jsonl"]},
        {"name": "b", "paths": ["b/*.jsonl"]},
    ])))
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "spec.yaml")
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("sources[1].paths:")
    assert "b/*.jsonl" in info.value.problems[0]
    assert load_spec(tmp_path / "spec.yaml", check_files=False).source("b").name == "b"


def test_files_named_by_stages_are_checked(tmp_path):
    write_jsonl(tmp_path / "a" / "one.jsonl", [{"text": "hello"}])
    stages = {"quality": {"positive": ["a"], "negative": ["a2"], "model": "q.bin"},
              "decontaminate": {"tasks": [{"name": "t", "paths": ["t.jsonl"], "fields": ["q"]}]}}
    sources = [{"name": "a", "paths": ["a/*.jsonl"]}, {"name": "a2", "paths": ["a/*.jsonl"]}]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(minimal(sources=sources, stages=stages)))
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "spec.yaml")
    assert [p.split(":")[0] for p in info.value.problems] == [
        "stages.quality.model", "stages.decontaminate.tasks[0].paths"]


def test_bad_yaml_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: t\nsources: [\n  {name: a\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value) and "line" in info.value.problems[0]


def test_yaml_is_read_with_the_safe_loader(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\nsources: []\n")
    with pytest.raises(SpecError):
        load_spec(path)


def test_spec_hash_is_stable_and_sensitive():
    a = parse_spec(minimal(), check_files=False)
    b = parse_spec(minimal(), check_files=False)
    c = parse_spec(minimal(seed=99), check_files=False)
    assert a.hash() == b.hash() != c.hash()


def test_cli_validate(tmp_path, capsys):
    assert curate(["validate", str(ROOT / "corpus_specs" / "mtnlg_530b.yaml"),
                   "--no-files"]) == 0
    assert "15 sources" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(minimal(sources=[{"name": "a", "paths": ["x"],
                                                    "weight": 0}])))
    assert curate(["validate", str(bad), "--no-files"]) == 2
    err = capsys.readouterr().err
    assert "sources[0].weight:" in err


def test_weight_and_epochs_cannot_be_mixed_across_sources():
    problems = problems_of(minimal(sources=[
        {"name": "a", "paths": ["x"], "weight": 0.5},
        {"name": "b", "paths": ["y"], "epochs": 2.0},
        {"name": "c", "paths": ["z"], "weight": 0.5},
    ]))
    assert problems == [
        "sources[1].epochs: mixed with `weight` in sources[0], sources[2]; the blend takes a "
        "weight for every source or epochs for every source"]
    every_source_epochs = minimal(sources=[{"name": "a", "paths": ["x"], "epochs": 1.0},
                                           {"name": "b", "paths": ["y"], "epochs": 2.0}])
    assert parse_spec(every_source_epochs, check_files=False).source("b").epochs == 2.0


def test_an_unknown_quality_source_is_reported_with_the_field_errors():
    problems = problems_of(minimal(
        sources=[{"name": "a", "paths": ["x"], "weight": -1}],
        stages={"quality": {"positive": ["a"], "negative": ["nope"], "bogus": 1}}))
    assert any(p.startswith("sources[0].weight:") for p in problems)
    assert any(p.startswith("stages.quality.bogus: unknown key") for p in problems)
    assert any(p.startswith("stages.quality.negative[0]: no source named 'nope'")
               for p in problems)
    assert len(problems) == 3


def test_validate_suggests_no_files_when_only_files_are_missing(tmp_path, capsys):
    assert curate(["validate", str(ROOT / "corpus_specs" / "mtnlg_530b.yaml")]) == 2
    err = capsys.readouterr().err
    assert "matches no file" in err
    assert err.rstrip().splitlines()[-1] == (
        "(only input files are missing: `curate validate --no-files "
        f"{ROOT / 'corpus_specs' / 'mtnlg_530b.yaml'}` checks the rest of the spec without them)")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(minimal(sources=[{"name": "a", "paths": ["x"], "weight": 0}])))
    assert curate(["validate", str(bad)]) == 2
    assert "--no-files" not in capsys.readouterr().err
