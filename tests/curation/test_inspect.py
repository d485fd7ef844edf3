"""`curate inspect`: shards, blended samples and a document's fate, on a real demo run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from curation.cli import main
from curation.inspect import InspectError, inspect_doc, inspect_samples, inspect_shard

EOD = "<|endoftext|>"


@pytest.fixture(scope="module")
def run_out(demo_run) -> Path:
    return demo_run


def curated(out: Path) -> pd.DataFrame:
    return pq.read_table(out / "curated", columns=["id", "source", "text"]).to_pandas()


def test_manifest_summary_checks_every_shard_and_decodes_the_first_document(run_out):
    manifest_path = run_out / "tokens" / "web" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    text = inspect_shard(manifest_path)
    assert f"{manifest['documents']:,} documents, {manifest['tokens']:,} tokens" in text
    assert text.count("sha256: OK; counts match the manifest") == len(manifest["shards"])
    docs = curated(run_out).set_index("id")
    first_id = text.split("first document '")[1].split("'")[0]
    first_line = docs.loc[first_id, "text"].splitlines()[0][:60]
    assert f"    {first_line}" in text


def test_shard_summary_reports_a_corrupt_shard(run_out, tmp_path):
    copy = tmp_path / "pydocs"
    shutil.copytree(run_out / "tokens" / "pydocs", copy)
    shard = copy / "shard-00000.arrow"
    assert "sha256: OK" in inspect_shard(shard)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the token values: still a readable Arrow file
    shard.write_bytes(bytes(data))
    assert "sha256: MISMATCH" in inspect_shard(shard)


def test_shard_errors_name_the_path(tmp_path):
    with pytest.raises(InspectError, match="nothing.arrow: no such file"):
        inspect_shard(tmp_path / "nothing.arrow")
    bogus = tmp_path / "bogus.arrow"
    bogus.write_text("not arrow")
    with pytest.raises(InspectError, match="bogus.arrow: not an Arrow IPC token shard"):
        inspect_shard(bogus)
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(InspectError, match="notes.txt: expected a .arrow"):
        inspect_shard(other)
    broken = tmp_path / "manifest.json"
    broken.write_text("{}")
    with pytest.raises(InspectError, match="manifest.json: not a token manifest"):
        inspect_shard(broken)


def test_samples_are_decoded_text_of_the_named_source(run_out):
    text = inspect_samples(run_out, n=2, seq_len=32)
    docs = curated(run_out)
    blocks = text.split("\nsample ")[1:]
    assert len(blocks) == 2
    for block in blocks:
        source = block.split(" from ")[1].split(" ")[0]
        assert "(33 tokens" in block
        body = block.split("\n", 1)[1]
        piece = body.split(EOD)[0].splitlines()[0].strip()[2:22]
        assert piece and piece in "\n".join(docs.loc[docs["source"] == source, "text"])


def test_samples_errors_name_the_folder(run_out, tmp_path):
    with pytest.raises(InspectError, match="no such output folder"):
        inspect_samples(tmp_path / "missing")
    with pytest.raises(InspectError, match=str(tmp_path / "tokens")):
        inspect_samples(tmp_path)


def test_doc_of_a_removed_document_shows_its_stage_reason_and_text(run_out):
    ledger = pq.read_table(run_out / "ledger").to_pandas()
    row = ledger[ledger["stage"] == "language"].iloc[0]
    text = inspect_doc(run_out, row["id"])
    assert f"curated: no — removed by language ({row['reason']})" in text
    assert "text as language received it:" in text
    assert row["id"] not in set(curated(run_out)["id"])


def test_doc_lists_ledger_rows_in_stage_order_and_the_curated_copy(run_out):
    ledger = pq.read_table(run_out / "ledger").to_pandas()
    kept = set(curated(run_out)["id"])
    several = ledger[ledger["id"].isin(kept)].groupby("id")["stage"].nunique()
    doc_id = several[several >= 2].index[0]
    text = inspect_doc(run_out, doc_id)
    order = [p.name.split("_", 1)[1] for p in sorted((run_out / "stages").iterdir())]
    shown = [line.split()[0] for line in text.splitlines() if line.startswith("  ")
             and line.split()[0] in order]
    assert shown == sorted(shown, key=order.index) and len(shown) >= 2
    assert "curated: yes, in curated/" in text


def test_doc_unknown_id_is_a_clear_error(run_out, capsys):
    with pytest.raises(InspectError, match="id 'no-such-doc': not in"):
        inspect_doc(run_out, "no-such-doc")
    assert main(["inspect", "doc", str(run_out), "no-such-doc"]) == 2
    assert "no-such-doc" in capsys.readouterr().err


def test_cli_prints_each_view(run_out, capsys):
    assert main(["inspect", "shard", str(run_out / "tokens" / "pydocs" / "manifest.json")]) == 0
    assert "first document" in capsys.readouterr().out
    assert main(["inspect", "samples", str(run_out), "--n", "1", "--seq-len", "16"]) == 0
    assert "sample 0 from" in capsys.readouterr().out


def test_shard_of_the_tokens_folder_lists_its_sources(run_out, capsys):
    assert main(["inspect", "shard", str(run_out / "tokens")]) == 0
    lines = capsys.readouterr().out.splitlines()
    sources = sorted(p.name for p in (run_out / "tokens").iterdir() if p.is_dir())
    assert lines[0] == (f"{run_out / 'tokens'}: token shards of {len(sources)} sources; "
                        f"inspect one with `curate inspect shard "
                        f"{run_out / 'tokens' / sources[0]}`")
    for source, line in zip(sources, lines[1:], strict=True):
        manifest = json.loads((run_out / "tokens" / source / "manifest.json").read_text())
        assert line == (f"  {source}/: {manifest['documents']:,} documents, "
                        f"{manifest['tokens']:,} tokens in {len(manifest['shards'])} shards")
