"""`pretrain eval` and `train.eval_tasks_every`: lm-evaluation-harness, offline, on the task
registry decontamination shares.

The wiring is proven, not assumed: a tiny GPT trained to memorise a multiple-choice task
scores 1.0 on it, and exactly 0.5 (chance for two choices) on the same task with half of its
answers flipped. The shipped tasks run end to end on a model trained on the demo corpus, with
what decontamination cut for each task in the report."""

import json
import multiprocessing
import random
import re
from pathlib import Path

import pytest
import torch

from curation.tasks.registry import SHIPPED, TaskError, resolve, shipped_registry
from training.checkpoint import save_checkpoint
from training.cli import main
from training.config import TrainingConfig
from training.parallel.grid import destroy_grid
from training.trainer import Trainer

pytest.importorskip("lm_eval")
tokenizers = pytest.importorskip("tokenizers")

EOD = "<|endoftext|>"
ITEMS = 16
STEPS = 150


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a loaded 2-core machine, two spinning threads make these small
    models ~10x slower. Denormals flushed, as every training entry point does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_num_threads(threads)


def train_tokenizer(path: Path, vocab_size: int) -> tokenizers.Tokenizer:
    from pydoc_data.topics import topics

    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    tokenizer.train_from_iterator(list(topics.values()), tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOD], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(path))
    return tokenizer


def memo_items() -> list[dict]:
    """Two-choice items from the shipped choice task, cut short (a small model's context): a
    context, its true ending and one other, the true one first or second by a seeded coin."""
    rng = random.Random(7)
    lines = (SHIPPED.parent / "pydoc_choice.jsonl").read_text().splitlines()[:ITEMS]
    items = []
    for line in lines:
        item = json.loads(line)
        right = " ".join(item["choices"][item["label"]].split()[:5])
        wrong = " ".join(item["choices"][(item["label"] + 1) % len(item["choices"])].split()[:5])
        label = rng.randrange(2)
        items.append({"context": " ".join(item["context"].split()[-5:]),
                      "choices": [wrong, right] if label else [right, wrong], "label": label})
    return items


class MemoSource:
    """Every global batch is the whole task: each item's context and right answer."""

    def __init__(self, tokenizer, items: list[dict], seq_len: int):
        self.vocab_size, self.eod_id = tokenizer.get_vocab_size(), tokenizer.token_to_id(EOD)
        rows = torch.full((len(items), seq_len + 1), self.eod_id, dtype=torch.long)
        for i, item in enumerate(items):
            ids = tokenizer.encode(item["context"] + " " + item["choices"][item["label"]]).ids
            assert len(ids) <= seq_len
            rows[i, : len(ids)] = torch.tensor(ids)
        self.rows = rows

    def local_batch(self, consumed_samples, global_batch, dp_rank, dp_size):
        return self.rows


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    root = tmp_path_factory.mktemp("memorised")
    (root / "curated").mkdir()
    tokenizer = train_tokenizer(root / "curated" / "tokenizer.json", 1000)
    items = memo_items()
    flipped = set(random.Random(11).sample(range(ITEMS), ITEMS // 2))
    shuffled = [{**item, "label": 1 - item["label"]} if i in flipped else item
                for i, item in enumerate(items)]
    tasks = root / "tasks"
    tasks.mkdir()
    for name, rows in (("memo", items), ("memo_shuffled", shuffled)):
        (tasks / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "registry.yaml").write_text(
        "tasks:\n  - {name: memo, kind: choice, paths: [memo.jsonl]}\n"
        "  - {name: memo_shuffled, kind: choice, paths: [memo_shuffled.jsonl]}\n")
    cfg = TrainingConfig.model_validate({
        "model": {"layers": 2, "hidden": 64, "heads": 4, "seq_len": 40, "pad_vocab_to": 64},
        "batch": {"micro": ITEMS, "global": ITEMS},
        "optim": {"lr": 2e-2, "min_lr": 2e-3, "warmup": 5, "weight_decay": 0.0},
        "train": {"steps": STEPS, "save_every": STEPS, "dir": str(root / "run"), "seed": 3,
                  "log_every": STEPS},
        "data": {"curated": str(root / "curated")}})
    source = MemoSource(tokenizer, items, cfg.model.seq_len)
    trainer = Trainer(cfg, sources=(source, source))
    records = trainer.run(on_save=save_checkpoint)
    trainer.close()
    destroy_grid()
    assert records[-1]["loss"] < 0.5, records[-1]["loss"]  # memorised (EOD padding included)
    return root


def read_results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["results"]


def test_memorised_task_scores_one_and_its_flipped_answers_score_chance(memorised, capsys):
    out = memorised / "eval"
    code = main(["eval", str(memorised / "run"), "--tasks", "memo", "memo_shuffled",
                 "--registry", str(memorised / "tasks" / "registry.yaml"), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    results = read_results(out)
    assert results["memo_0shot"]["acc,none"] == 1.0
    assert results["memo_shuffled_0shot"]["acc,none"] == 0.5  # half the answers flipped
    stderr = results["memo_shuffled_0shot"]["acc_stderr,none"]
    assert stderr == pytest.approx((0.25 * ITEMS / (ITEMS - 1) / ITEMS) ** 0.5)
    report = (out / "report.md").read_text()
    assert "## memo_shuffled" in report and "| 0 | 0.500 ± 0.129 |" in report
    assert "Decontamination: unknown, no " in report  # no decontamination.json in curated/
    # given the run folder, the metrics go to the run's TensorBoard at the checkpoint's step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(memorised / "run" / "tb"))
    board.Reload()
    [scalar] = board.Scalars("eval/memo/0shot/acc")
    assert (scalar.step, scalar.value) == (STEPS, 1.0)


def test_the_registry_rejects_a_task_whose_files_differ_between_spec_and_eval(memorised,
                                                                              tmp_path, capsys):
    from curation.decontam.summary import summarize_decontamination
    from curation.spec import SpecError, parse_spec

    shipped = (SHIPPED.parent / "pydoc_cloze.jsonl").read_text()
    (tmp_path / "copy.jsonl").write_text(shipped)
    (tmp_path / "edited.jsonl").write_text(shipped.replace("the", "a", 1))
    spec = {"name": "t", "sources": [{"name": "s", "paths": ["copy.jsonl"]}],
            "stages": {"decontaminate": {"tasks": [
                {"name": "pydoc_cloze", "paths": ["copy.jsonl"], "kind": "cloze"}]}}}
    parse_spec(spec, base_dir=tmp_path)  # the same bytes elsewhere are the same task
    spec["stages"]["decontaminate"]["tasks"][0]["paths"] = ["edited.jsonl"]
    with pytest.raises(SpecError, match=r"stages\.decontaminate\.tasks\[0\]: task "
                       r"'pydoc_cloze': .*edited\.jsonl.* their contents differ"):
        parse_spec(spec, base_dir=tmp_path)

    # A corpus cleaned against other files under the task's name: eval stops before the model
    entry = {"name": "pydoc_cloze", "paths": ["edited.jsonl"], "kind": "cloze"}
    from curation.tasks.entry import TaskEntry
    from curation.tasks.registry import resolve_entry

    task = resolve_entry(TaskEntry(**entry), tmp_path, "spec")
    curated = tmp_path / "out"
    curated.mkdir()
    import pandas as pd

    summarize_decontamination(pd.DataFrame(columns=["id", "stage", "action", "detail"]),
                              curated / "decontamination.json",
                              task_records={"pydoc_cloze": task.record()})
    assert main(["eval", str(memorised / "run"), "--tasks", "pydoc_cloze",
                 "--curated", str(curated), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "pretrain eval: task 'pydoc_cloze': the corpus was decontaminated against" in err
    assert "edited.jsonl" in err and "their contents differ" in err
    assert not (tmp_path / "e").exists()

    # ... and a registry file that reuses a shipped name for other files
    (tmp_path / "registry.yaml").write_text(
        "tasks:\n  - {name: pydoc_cloze, kind: cloze, paths: [edited.jsonl]}\n")
    assert main(["eval", str(memorised / "run"), "--tasks", "pydoc_cloze", "--registry",
                 str(tmp_path / "registry.yaml"), "--out", str(tmp_path / "e")]) == 2
    assert "their contents differ" in capsys.readouterr().err


@pytest.mark.parametrize(("change", "phrase"), [
    ({"tasks": ["nope"]}, "unknown task 'nope': not in the task registry"),
    ({"shots": "0,many"}, "--shots: 'many' is not a shot count"),
    ({"registry": "tasks:\n  - {name: gone, kind: cloze, paths: [missing.jsonl]}\n",
      "tasks": ["gone"]}, "task 'gone' ("),
    ({"rows": [{"context": "a b", "choices": ["x", "y"], "label": 2}], "tasks": ["bad"]},
     "bad.jsonl: row 1: field 'label' must be the 0-based index of the right choice (0..1)"),
    ({"rows": [{"context": "a b", "options": ["x", "y"], "label": 0}], "tasks": ["bad"]},
     "bad.jsonl: row 1: field 'choices' (choices) is missing"),
    ({"rows": [{"context": "a b", "choices": ["x", "many words " * 30], "label": 0}],
      "tasks": ["bad"]}, "more than the model's context of 40 leaves for it"),
])
def test_bad_input_is_one_clear_error_before_the_model_loads(memorised, tmp_path, capsys,
                                                             change, phrase):
    (tmp_path / "bad.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in change.get("rows", [])))
    registry = tmp_path / "registry.yaml"
    registry.write_text(change.get("registry", "tasks:\n  - {name: bad, kind: choice, "
                                               "paths: [bad.jsonl]}\n"))
    code = main(["eval", str(memorised / "run"), "--tasks", *change.get("tasks", ["memo"]),
                 "--shots", change.get("shots", "0"), "--registry", str(registry),
                 "--registry", str(memorised / "tasks" / "registry.yaml"),
                 "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert code == 2 and phrase in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "e").exists()
    if change.get("registry"):
        assert "no file matches" in err and "missing.jsonl" in err


def test_a_spec_may_name_a_shipped_task_alone_and_unknown_names_are_errors(tmp_path):
    from curation.spec import SpecError, parse_spec
    from curation.tasks.entry import TaskEntry

    task = resolve(TaskEntry(name="pydoc_yesno"), tmp_path, "spec")
    assert task.files == (SHIPPED.parent / "pydoc_yesno.jsonl",)
    assert task.text_fields() == ["passage", "question"]
    spec = {"name": "t", "sources": [{"name": "s", "paths": ["x.jsonl"]}],
            "stages": {"decontaminate": {"tasks": [{"name": "lambada"}]}}}
    with pytest.raises(SpecError, match="task 'lambada' gives no `paths` and is not a shipped"):
        parse_spec(spec, base_dir=tmp_path, check_files=False)
    with pytest.raises(TaskError, match="not a registered task"):
        resolve(TaskEntry(name="lambada", fields=["text"]), tmp_path, "spec")


def test_shipped_tasks_hold_text_the_demo_corpus_sources_never_contain():
    from curation.decontam.ngrams import build_task_table, find_matches
    from curation.demo.python_text import docstring_records, pydoc_topic_records
    from curation.tasks.files import read_task_texts

    tasks = [(name, read_task_texts(resolve(entry, SHIPPED.parent, "shipped").files[0],
                                    entry.text_fields()))
             for name, (entry, _, _) in shipped_registry().items()]
    assert [len(texts) > 30 for _, texts in tasks] == [True] * 3
    table = build_task_table(tasks, 13, 8)
    corpus = [r["text"] for r in pydoc_topic_records()] + [r["text"] for r in
                                                            docstring_records()]
    assert len(find_matches(corpus, table).key) == 0


def _no_pool(*args, **kwargs):
    raise AssertionError("lm-eval forked a multiprocessing Pool from a process with threads")


def test_shipped_tasks_evaluate_a_demo_trained_model_and_during_training(
        demo_run, tmp_path, capsys, monkeypatch):
    """Trained on the demo corpus with `train.eval_tasks_every` (the cloze task, zero-shot,
    in a child process at step 4), then `pretrain eval` on the same checkpoint: every shipped
    task at 0 and 1 shots (the first 12 items of each, to keep the test short)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child evaluation; see one_thread
    monkeypatch.setattr(multiprocessing, "Pool", _no_pool)  # a fork of this process can hang
    run = tmp_path / "run"
    assert main(["tiny", "--set", f"data.curated={demo_run}", "--set", f"train.dir={run}",
                 "--set", "train.steps=4", "--set", "train.save_every=4", "--set",
                 "train.eval_every=0", "--set", "train.eval_tasks_every=4", "--set",
                 "train.eval_tasks=[pydoc_cloze]"]) == 0
    torch.set_num_threads(1)  # the trainer set its own
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    during = {k: v for k, v in records[-1].items() if k.startswith("eval/")}
    assert records[-1]["step"] == 4
    assert set(during) == {"eval/pydoc_cloze/0shot/acc", "eval/pydoc_cloze/0shot/perplexity"}
    child = json.loads((run / "evals" / "step-00000004" / "results.json").read_text())
    assert child["n-samples"]["pydoc_cloze_0shot"]["effective"] == 36
    assert during["eval/pydoc_cloze/0shot/acc"] == child["results"]["pydoc_cloze_0shot"]["acc,none"]

    out = tmp_path / "eval"
    assert main(["eval", str(run), "--tasks", "pydoc_cloze", "pydoc_choice", "pydoc_yesno",
                 "--shots", "0,1", "--limit", "12", "--out", str(out)]) == 0
    capsys.readouterr()
    payload = json.loads((out / "results.json").read_text())
    samples = {name: (n["original"], n["effective"]) for name, n in payload["n-samples"].items()}
    assert samples == {f"pydoc_{task}_{k}shot": (items, 12) for task, items in
                       (("cloze", 36), ("choice", 40), ("yesno", 34)) for k in (0, 1)}
    for name in samples:
        assert 0.0 <= payload["results"][name]["acc,none"] <= 1.0
    report = (out / "report.md").read_text()
    assert "cloze task, 36 items (the first 12 scored)" in report
    decontamination = json.loads((demo_run / "decontamination.json").read_text())
    cloze = decontamination["tasks"].get("pydoc_cloze", {})
    assert (f"Decontamination: {cloze.get('documents_modified', 0)} corpus documents cut and "
            f"{cloze.get('documents_dropped', 0)} dropped for this task") in report
    section = re.search(r"## pydoc_choice\n(.*?)(\n## |\Z)", report, re.S).group(1)
    assert "not checked against this task" in section  # the demo spec lists only the cloze
    assert re.search(r"\| 1 \| \d\.\d{3} ± \d\.\d{3} \|", section)


@pytest.mark.parametrize(("overrides", "phrase"), [
    (["train.eval_tasks_every=30"], "eval_tasks_every (30) must be a multiple of save_every"),
    (["train.eval_tasks_every=50", "train.eval_tasks=[]"], "eval_tasks is empty"),
    (["train.eval_shots=0,lots"], "eval_shots: 'lots' is not a shot count"),
    (["train.eval_tasks_every=50", "train.eval_tasks=[nope]"], "unknown task 'nope'"),
])
def test_train_eval_tasks_every_is_checked_before_training(tmp_path, capsys, overrides, phrase):
    sets = [arg for o in ["train.eval_tasks=[pydoc_cloze]", *overrides,
                          f"train.dir={tmp_path / 'run'}"] for arg in ("--set", o)]
    assert main(["tiny", *sets]) == 2
    err = capsys.readouterr().err
    assert phrase in err, err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
