"""Tokenization: a deterministic tokenizer, and token shards that plain pyarrow reads back."""

from __future__ import annotations

import json
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pydantic import ValidationError

from curation.shards import file_sha256
from curation.tokenize import TokenizerConfig, tokenize_corpus, train_or_load_tokenizer
from tests.curation.driver_guard import forbid_data_reads

TEXTS = [topics[k] for k in sorted(topics)][:90]  # real English: Python's own documentation


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None, silence_logs=40)
    with Client(cluster) as c:
        yield c
    cluster.close()


def write_curated(out: Path, partition_sizes: dict[str, list[int]]) -> Path:
    """OUT/curated/<source>/part-*.parquet, documents taken from TEXTS in order."""
    curated, position = out / "curated", 0
    for source, sizes in partition_sizes.items():
        (curated / source).mkdir(parents=True, exist_ok=True)
        for p, size in enumerate(sizes):
            texts = TEXTS[position:position + size]
            pd.DataFrame({"id": [f"{source}/{position + i}" for i in range(size)],
                          "source": source, "text": texts, "meta": "{}"}).to_parquet(
                curated / source / f"part-{p:05d}.parquet")
            position += size
    return curated


def read_shards(source_dir: Path) -> tuple[list[str], list[list[int]], dict]:
    manifest = json.loads((source_dir / "manifest.json").read_text())
    ids, tokens = [], []
    for shard in manifest["shards"]:
        with pa.OSFile(str(source_dir / shard["file"])) as f:
            table = pa.ipc.open_file(f).read_all()
        ids += table.column("id").to_pylist()
        tokens += table.column("tokens").to_pylist()
    return ids, tokens, manifest


CONFIG = TokenizerConfig(train={"vocab_size": 600, "max_docs": 60}, shard_tokens=15000)


def test_config_needs_exactly_one_of_train_or_path():
    with pytest.raises(ValidationError, match="exactly one"):
        TokenizerConfig()
    with pytest.raises(ValidationError, match="exactly one"):
        TokenizerConfig(train={}, path="tok.json")
    with pytest.raises(ValidationError):
        TokenizerConfig(train={"vocab": 10})


def test_trained_tokenizer_is_deterministic_and_saved(tmp_path):
    curated = write_curated(tmp_path, {"a": [30, 30]})
    tokenizer, sha = train_or_load_tokenizer(CONFIG, curated, tmp_path / "o1", tmp_path)
    _, again = train_or_load_tokenizer(CONFIG, curated, tmp_path / "o2", tmp_path)
    assert sha == again == file_sha256(tmp_path / "o1" / "tokenizer.json")
    assert tokenizer.get_vocab_size() == 600
    assert tokenizer.token_to_id("<|endoftext|>") is not None
    text = TEXTS[3][:200]
    assert tokenizer.decode(tokenizer.encode(text).ids) == text  # byte-level: lossless


def test_shards_read_back_with_plain_pyarrow(tmp_path, client):
    curated = write_curated(tmp_path, {"alpha": [20, 15, 5], "beta": [10]})
    tokenizer, sha = train_or_load_tokenizer(CONFIG, curated, tmp_path, tmp_path)
    manifests = tokenize_corpus(CONFIG, curated, tmp_path / "tokens",
                                tmp_path / "tokenizer.json", client)
    assert sorted(manifests) == ["alpha", "beta"]
    eod = tokenizer.token_to_id("<|endoftext|>")
    ids, tokens, manifest = read_shards(tmp_path / "tokens" / "alpha")
    assert ids == [f"alpha/{i}" for i in range(40)]
    for text, doc in zip(TEXTS[:40], tokens, strict=True):
        assert doc == tokenizer.encode(text, add_special_tokens=False).ids + [eod]
    assert manifest["dtype"] == "uint16" and manifest["eod_id"] == eod
    assert manifest["tokenizer"]["sha256"] == sha
    assert (tmp_path / "tokens" / "alpha" / manifest["tokenizer"]["path"]).resolve() == \
        (tmp_path / "tokenizer.json").resolve()
    assert len(manifest["shards"]) > 1  # shard_tokens cut the source into several shards
    for shard in manifest["shards"]:
        path = tmp_path / "tokens" / "alpha" / shard["file"]
        assert shard["sha256"] == file_sha256(path)
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        assert table.schema.field("tokens").type == pa.list_(pa.uint16())
        assert (shard["documents"], shard["tokens"]) == (
            table.num_rows, len(table.column("tokens").combine_chunks().flatten()))
    assert sum(s["tokens"] for s in manifest["shards"][:-1]) >= 15000 * (
        len(manifest["shards"]) - 1)
    assert manifest["tokens"] == sum(len(t) for t in tokens)
    assert not list((tmp_path / "tokens" / "alpha").glob("_parts-*"))


def test_shards_do_not_depend_on_partitioning_and_reruns_are_skipped(tmp_path, client):
    shas = []
    for name, sizes in [("one", [40]), ("many", [7, 13, 1, 19])]:
        out = tmp_path / name
        curated = write_curated(out, {"src": sizes})
        config = TokenizerConfig(path=str(tmp_path / "tok.json"), shard_tokens=15000)
        if name == "one":
            train_or_load_tokenizer(CONFIG, curated, tmp_path, tmp_path)
            (tmp_path / "tokenizer.json").rename(tmp_path / "tok.json")
        train_or_load_tokenizer(config, curated, out, tmp_path)
        tokenize_corpus(config, curated, out / "tokens", out / "tokenizer.json", client)
        shas.append([s["sha256"] for s in read_shards(out / "tokens" / "src")[2]["shards"]])
    assert shas[0] == shas[1]  # byte-identical shards from differently partitioned input

    source_dir = tmp_path / "many" / "tokens" / "src"
    stamps = {p.name: p.stat().st_mtime_ns for p in source_dir.iterdir()}
    tokenize_corpus(config, tmp_path / "many" / "curated", tmp_path / "many" / "tokens",
                    tmp_path / "many" / "tokenizer.json", client)
    assert {p.name: p.stat().st_mtime_ns for p in source_dir.iterdir()} == stamps
    (source_dir / "shard-00001.arrow").unlink()  # an interrupted run: the source is redone
    tokenize_corpus(config, tmp_path / "many" / "curated", tmp_path / "many" / "tokens",
                    tmp_path / "many" / "tokenizer.json", client)
    assert [s["sha256"] for s in read_shards(source_dir)[2]["shards"]] == shas[0]


def word_level_tokenizer(path: Path, vocab_size: int) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(vocab_size - 2)}
    vocab.update({"[UNK]": vocab_size - 2, "<|endoftext|>": vocab_size - 1})
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(path))
    return path


def test_large_vocabulary_gives_uint32_shards(tmp_path, client):
    word_level_tokenizer(tmp_path / "big.json", 70000)
    curated = tmp_path / "curated" / "s"
    curated.mkdir(parents=True)
    pd.DataFrame({"id": ["s/0", "s/1"], "source": "s", "text": ["w1 w69000 w5", "w65536 zz"],
                  "meta": "{}"}).to_parquet(curated / "part-00000.parquet")
    config = TokenizerConfig(path="big.json")
    _, sha = train_or_load_tokenizer(config, tmp_path / "curated", tmp_path, tmp_path)
    tokenize_corpus(config, tmp_path / "curated", tmp_path / "tokens", tmp_path / "tokenizer.json",
                    client)
    _, tokens, manifest = read_shards(tmp_path / "tokens" / "s")
    assert manifest["dtype"] == "uint32" and manifest["vocab_size"] == 70000
    assert tokens == [[1, 69000, 5, 69999], [65536, 69998, 69999]]
    table = pa.ipc.open_file(pa.memory_map(str(tmp_path / "tokens/s/shard-00000.arrow")))
    assert table.schema.field("tokens").type == pa.list_(pa.uint32())


def test_tokenizer_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        train_or_load_tokenizer(TokenizerConfig(path="missing.json"), tmp_path, tmp_path,
                                tmp_path)
    word_level_tokenizer(tmp_path / "no_eod.json", 300)
    config = TokenizerConfig(path="no_eod.json", eod_token="<eos>")
    with pytest.raises(ValueError, match="no_eod.json.*'<eos>'"):
        train_or_load_tokenizer(config, tmp_path, tmp_path, tmp_path)
    with pytest.raises(ValueError, match="no curated partitions"):
        train_or_load_tokenizer(CONFIG, tmp_path / "curated", tmp_path, tmp_path)


def test_encoded_values_match_numpy_flattening():
    from tokenizers import Tokenizer, models, pre_tokenizers

    from curation.tokenize import encode_documents

    tokenizer = Tokenizer(models.WordLevel(vocab={"a": 0, "b": 1, "[UNK]": 2, "E": 3},
                                           unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    flat, offsets = encode_documents(tokenizer, ["a b", "", "b x a"], 3, np.dtype(np.uint16),
                                     batch_docs=2)
    assert flat.tolist() == [0, 1, 3, 3, 1, 2, 0, 3] and offsets.tolist() == [0, 3, 4, 8]


def test_the_driver_reads_no_documents_or_tokens(tmp_path, client, monkeypatch):
    """Sampling, training, encoding and writing shards all run on the workers: with every
    data reader refused in this process, the run writes what an unguarded run writes."""
    expected = {}
    for name in ("free", "guarded"):
        out = tmp_path / name
        curated = write_curated(out, {"alpha": [20, 15, 5], "beta": [10]})
        if name == "guarded":
            forbid_data_reads(monkeypatch)
        _, sha = train_or_load_tokenizer(CONFIG, curated, out, tmp_path, seed=5, client=client)
        tokenize_corpus(CONFIG, curated, out / "tokens", out / "tokenizer.json", client)
        monkeypatch.undo()
        manifests = {s: read_shards(out / "tokens" / s)[2] for s in ("alpha", "beta")}
        expected.setdefault("sha", sha)
        expected.setdefault("manifests", manifests)
        assert (sha, manifests) == (expected["sha"], expected["manifests"])


def test_tokenizer_sample_does_not_depend_on_partitioning_or_the_cluster(tmp_path, client):
    config = TokenizerConfig(train={"vocab_size": 600, "max_docs": 25})
    shas = []
    for name, sizes, seed, cluster in [("one", [60], 7, None), ("many", [7, 23, 1, 29], 7, client),
                                       ("seed", [60], 8, None)]:
        curated = write_curated(tmp_path / name, {"a": sizes})
        shas.append(train_or_load_tokenizer(config, curated, tmp_path / name, tmp_path,
                                            seed=seed, client=cluster)[1])
    assert shas[0] == shas[1] != shas[2]  # another seed samples other documents


def test_shards_are_the_windows_their_documents_start_in(tmp_path, client):
    """Document d goes to window start(d) // shard_tokens; shards are the non-empty windows,
    numbered in order (a document longer than a window leaves empty ones behind)."""
    word_level_tokenizer(tmp_path / "w.json", 300)
    lengths = [3, 4, 25, 2, 5, 1, 1, 12]  # tokens with the EOD
    texts = [" ".join(["w1"] * (n - 1)) for n in lengths]
    config = TokenizerConfig(path="w.json", shard_tokens=10)
    shards = []
    for name, sizes in [("one", [8]), ("many", [2, 3, 1, 2]), ("single", [1] * 8)]:
        curated, start = tmp_path / name / "curated" / "s", 0
        curated.mkdir(parents=True)
        for p, size in enumerate(sizes):
            pd.DataFrame({"id": [f"s/{i}" for i in range(start, start + size)], "source": "s",
                          "text": texts[start:start + size], "meta": "{}"}).to_parquet(
                curated / f"part-{p:05d}.parquet")
            start += size
        train_or_load_tokenizer(config, curated.parent, tmp_path / name, tmp_path)
        tokenize_corpus(config, curated.parent, tmp_path / name / "tokens",
                        tmp_path / name / "tokenizer.json", client)
        shards.append(read_shards(tmp_path / name / "tokens" / "s")[2]["shards"])
    # starts 0 3 7 32 34 39 40 41 -> windows 0 0 0 3 3 3 4 4 (a greedy cut at >= 10 tokens
    # from each shard's start would make the second shard 3..7: it depends on the first)
    assert [(s["file"], s["documents"], s["tokens"]) for s in shards[0]] == [
        ("shard-00000.arrow", 3, 32), ("shard-00001.arrow", 3, 8),
        ("shard-00002.arrow", 2, 13)]
    assert shards[0] == shards[1] == shards[2]  # byte-identical whatever the partitioning
