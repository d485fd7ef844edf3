"""One JSON-lines reader (curation/jsonl.py) for curation's task files and the fine-tuning
task sets: each caller gets its own error type, naming the file and the line its way."""

import gzip

import pytest

from curation.jsonl import read_jsonl
from curation.tasks.files import read_records
from training.finetune.config import TaskDataConfig
from training.finetune.data import TaskDataError, read_examples


def test_records_and_line_numbers_skip_blank_lines_and_read_gzip(tmp_path):
    plain = tmp_path / "t.jsonl"
    plain.write_text('{"a": 1}\n\n{"a": 2}\n')
    packed = tmp_path / "t.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        assert list(read_jsonl(path)) == [(1, {"a": 1}), (3, {"a": 2})]


@pytest.mark.parametrize("line, problem", [("{oops", "invalid JSON"),
                                           ("[1, 2]", "expected a JSON object")])
def test_each_caller_gets_its_error_type_and_its_way_of_naming_the_line(tmp_path, line,
                                                                         problem):
    path = tmp_path / "t.jsonl"
    path.write_text('{"prompt": "p", "completion": "c"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"t\.jsonl: line 2: {problem}") as curation:
        list(read_records(path))
    assert type(curation.value) is ValueError
    cfg = TaskDataConfig(paths=[str(path)], prompt_field="prompt", completion_field="completion")
    with pytest.raises(TaskDataError, match=rf"t\.jsonl:2: {problem}"):
        read_examples(cfg)
