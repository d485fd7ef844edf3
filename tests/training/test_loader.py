"""The blended-dataset loader: packing, blending, sharding, resumption, caching and errors.

Sources are planted token shards whose tokens are all distinct (document d of a source holds
a run of consecutive ids), so every sample tells exactly where it came from.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.training.planted_out import EOD
from tests.training.planted_out import write_token_source as write_source
from training.data import (
    IndexBuildError,
    ShardError,
    SourceShards,
    blend_indices,
    build_blended_dataset,
    normalise_weights,
)
from training.data.blend import blend_indices_reference, prefix_bound
from training.data.cache import cached_indices
from training.data.dataset import parse_split, split_ranges
from training.data.gpt_dataset import GPTDataset, build_sample_indices, samples_per_epoch

MTNLG = [0.19336, 0.15652, 0.14336, 0.13017, 0.09446, 0.08962, 0.05689, 0.04771, 0.02897,
         0.01588, 0.01359, 0.01007, 0.00873, 0.00859, 0.00208]


def planted_docs(first_token: int, lengths) -> list[np.ndarray]:
    """Documents of distinct consecutive token ids, each ending with EOD."""
    docs, token = [], first_token
    for n in lengths:
        docs.append(np.append(np.arange(token, token + n - 1), EOD))
        token += n - 1
    return docs


@pytest.fixture()
def one_source(tmp_path):
    rng = np.random.default_rng(5)
    docs = planted_docs(1, rng.integers(2, 90, size=40))
    return SourceShards(write_source(tmp_path / "tokens", "pydocs", docs)), docs


def test_packing_covers_every_token_once_per_epoch_in_order(one_source):
    shards, docs = one_source
    seq_len = 16
    lengths = shards.document_lengths()
    n = samples_per_epoch(int(lengths.sum()), seq_len)
    indices = build_sample_indices(np.arange(len(docs)), lengths, seq_len, n, [0])
    dataset = GPTDataset(shards, indices, seq_len)
    samples = [dataset.packed(j) for j in range(n)]
    assert all(s.shape == (seq_len + 1,) and s.dtype == np.int64 for s in samples)
    assert all(a[-1] == b[0] for a, b in zip(samples, samples[1:], strict=False))  # overlap 1
    stream = np.concatenate([samples[0]] + [s[1:] for s in samples[1:]])
    order = indices["doc_idx"][:len(docs)]
    assert sorted(order.tolist()) == list(range(len(docs)))  # one epoch: each document once
    expected = np.concatenate([docs[d] for d in order])
    assert len(expected) - len(stream) < seq_len  # only the last partial sample is left out
    np.testing.assert_array_equal(stream, expected[:len(stream)])  # in order, EOD between
    assert sorted(indices["shuffle_idx"].tolist()) == list(range(n))
    assert sorted(dataset[i][0] for i in range(n)) == sorted(s[0] for s in samples)


def test_several_epochs_each_reshuffled(one_source):
    shards, docs = one_source
    lengths = shards.document_lengths()
    n = 3 * samples_per_epoch(int(lengths.sum()), 16) - 2
    doc_idx = build_sample_indices(np.arange(len(docs)), lengths, 16, n, [1])["doc_idx"]
    epochs = doc_idx.reshape(3, len(docs))
    assert all(sorted(e.tolist()) == list(range(len(docs))) for e in epochs)
    assert not np.array_equal(epochs[0], epochs[1])


@pytest.mark.parametrize("weights", [MTNLG, [0.999, 0.001], [0.5, 0.3, 0.2], [1.0]])
def test_blend_equals_its_sequential_definition_and_respects_the_bound(weights):
    n = 60000
    source, number = blend_indices(weights, n)
    ref_source, ref_number = blend_indices_reference(weights, n)
    np.testing.assert_array_equal(source, ref_source)
    np.testing.assert_array_equal(number, ref_number)
    w = np.asarray(weights) / sum(weights)
    onehot = np.zeros((n, len(w)), dtype=np.int64)
    onehot[np.arange(n), source] = 1
    counts = np.cumsum(onehot, axis=0)  # counts[n - 1]: samples per source among the first n
    deviation = np.abs(counts - np.outer(np.arange(1, n + 1), w))
    assert (deviation <= prefix_bound(w) + 1e-9).all()
    for k in range(len(w)):  # each source's samples are numbered 0, 1, 2, ... in stream order
        np.testing.assert_array_equal(number[source == k], np.arange((source == k).sum()))


def test_extreme_weights_and_tiny_streams_do_not_crash():
    source, _ = blend_indices([0.999, 0.001], 3)
    assert source.tolist() == [0, 0, 0]
    source, _ = blend_indices([0.0, 1.0, 0.0], 5)
    assert source.tolist() == [1] * 5


def test_weights_not_summing_to_one_warn_and_are_normalised():
    with pytest.warns(UserWarning, match="sum to 3"):
        assert normalise_weights({"a": 2.0, "b": 1.0}) == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        normalise_weights({"a": 0.25, "b": 0.75})
    with pytest.raises(ValueError, match="finite and >= 0"):
        normalise_weights({"a": -1.0})


@pytest.fixture()
def mtnlg_out(tmp_path):
    """15 small sources, token ids disjoint per source (source k owns [1 + 2000 k, ...))."""
    rng = np.random.default_rng(11)
    for k in range(15):
        docs = planted_docs(1 + 2000 * k, rng.integers(5, 60, size=30))
        write_source(tmp_path / "tokens", f"src{k:02d}", docs)
    return tmp_path


def test_blended_dataset_follows_the_mtnlg_table(mtnlg_out):
    weights = {f"src{k:02d}": w for k, w in enumerate(MTNLG)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the table sums to 0.99997
        data = build_blended_dataset(mtnlg_out, seq_len=8, seed=3,
                                     num_samples={"train": 3000, "valid": 50},
                                     weights=weights, split="80,20,0")
    train = data["train"]
    assert set(data) == {"train", "valid"} and len(train) == 3000 and len(data["valid"]) == 50
    assert train.vocab_size == 60000 and train.eod_id == EOD
    counts = np.bincount(train.blend_source, minlength=15)
    w = np.asarray(MTNLG) / sum(MTNLG)
    assert (np.abs(counts - 3000 * w) <= prefix_bound(w)).all()
    for i in range(0, 3000, 37):  # each sample's tokens belong to the source the blend chose
        tokens = train[i]
        owner = (tokens[tokens != EOD] - 1) // 2000
        assert tokens.shape == (9,) and (owner == train.blend_source[i]).all()


def test_train_and_valid_use_disjoint_documents(mtnlg_out):
    data = build_blended_dataset(mtnlg_out, seq_len=4, seed=3,
                                 num_samples={"train": 400, "valid": 100},
                                 weights={"src00": 1.0}, split="50,50")
    seen = {split: set(np.concatenate([d[i] for i in range(len(d))]).tolist()) - {EOD}
            for split, d in data.items()}
    assert seen["train"] and seen["valid"] and not seen["train"] & seen["valid"]


def test_split_ranges_are_contiguous_and_never_starve_a_split():
    assert split_ranges(1000, parse_split("98,1,1")) == [(0, 980), (980, 990), (990, 1000)]
    assert split_ranges(5, parse_split("98,1,1")) == [(0, 3), (3, 4), (4, 5)]
    assert split_ranges(5, parse_split("100")) == [(0, 5), (5, 5), (5, 5)]
    with pytest.raises(ValueError, match="'a,b'"):
        parse_split("a,b")


def test_same_seed_same_samples_and_cache_reuse(mtnlg_out, tmp_path):
    def build(seed, cache):
        data = build_blended_dataset(mtnlg_out, seq_len=8, seed=seed, num_samples={"train": 200},
                                     weights={"src00": 0.5, "src01": 0.5}, cache_dir=cache)
        return data["train"].batch(range(200))

    first = build(7, tmp_path / "c1")
    np.testing.assert_array_equal(first, build(7, tmp_path / "c2"))  # rebuilt from scratch
    np.testing.assert_array_equal(first, build(7, tmp_path / "c1"))  # loaded from the cache
    assert not np.array_equal(first, build(8, tmp_path / "c1"))
    assert len(list((tmp_path / "c1").iterdir())) == 2  # one entry per distinct input


def test_epochs_blend_from_the_frozen_spec(mtnlg_out):
    (mtnlg_out / "spec.yaml").write_text(
        "name: t\nsources:\n  - {name: src00, paths: [x], epochs: 2.0}\n"
        "  - {name: src01, paths: [x], epochs: 1.0}\n", encoding="utf-8")
    train = build_blended_dataset(mtnlg_out, seq_len=8, seed=1, split="100")["train"]
    lengths = [SourceShards(mtnlg_out / "tokens" / s).num_tokens for s in ("src00", "src01")]
    expected = [2 * samples_per_epoch(lengths[0], 8), samples_per_epoch(lengths[1], 8)]
    assert len(train) == sum(expected)
    assert np.bincount(train.blend_source).tolist() == expected


def test_empty_source_is_an_error_naming_its_manifest(tmp_path):
    write_source(tmp_path / "tokens", "good", planted_docs(1, [5, 6]))
    write_source(tmp_path / "tokens", "empty", [])
    with pytest.raises(ShardError, match=r"tokens: no token shards for source\(s\) 'empty'"):
        build_blended_dataset(tmp_path, 4, 0, {"train": 4}, weights={"good": 0.5, "empty": 0.5})


def test_corrupt_shard_is_an_error_naming_the_file(mtnlg_out):
    shard = mtnlg_out / "tokens" / "src03" / "shard-00001.arrow"
    data = bytearray(shard.read_bytes())
    first_tokens = SourceShards(shard.parent).document(7)[:3].tobytes()  # shard 1 starts at 7
    data[data.find(first_tokens)] ^= 0xFF  # same size, one token changed: only sha256 tells
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"src03/shard-00001.arrow: sha256"):
        build_blended_dataset(mtnlg_out, 8, 0, {"train": 10}, weights={"src03": 1.0})


def test_schema_mismatch_is_an_error_naming_the_file(tmp_path):
    source_dir = write_source(tmp_path / "tokens", "wide", planted_docs(1, [5, 6]),
                              vocab_size=70000)
    manifest = (source_dir / "manifest.json").read_text().replace('"uint32"', '"uint16"')
    (source_dir / "manifest.json").write_text(manifest)
    with pytest.raises(ShardError, match=r"wide/shard-00000.arrow: schema"):
        SourceShards(source_dir)


def test_vocabulary_larger_than_the_model_is_an_error(mtnlg_out):
    with pytest.raises(ShardError, match=r"src00/manifest.json: vocabulary of 60000.*model's 512"):
        build_blended_dataset(mtnlg_out, 8, 0, {"train": 10}, weights={"src00": 1.0},
                              model_vocab_size=512)


def test_uint32_shards_are_served(tmp_path):
    docs = planted_docs(65530, [30, 40])
    write_source(tmp_path / "tokens", "big", docs, vocab_size=70000)
    train = build_blended_dataset(tmp_path, 8, 0, {"train": 6}, weights={"big": 1.0},
                                  split="100")["train"]
    assert max(train[i].max() for i in range(6)) > 65535


def _wait_as_rank_1(cache_dir, inputs, queue):
    try:
        cached_indices(cache_dir, inputs, lambda _: {}, rank=1, timeout_s=60, poll_s=0.05)
        queue.put("no error")
    except IndexBuildError as err:
        queue.put(str(err))


def _fail_as_rank_0(cache_dir, inputs):
    def build(_previous):
        raise ValueError("planted failure in shard-00042.arrow")

    try:
        cached_indices(cache_dir, inputs, build, rank=0)
    except ValueError:
        pass


def test_rank0_failure_reaches_a_waiting_rank(tmp_path):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    inputs = {"planted": 1}
    waiter = context.Process(target=_wait_as_rank_1, args=(tmp_path, inputs, queue))
    waiter.start()
    builder = context.Process(target=_fail_as_rank_0, args=(tmp_path, inputs))
    builder.start()
    builder.join(60)
    message = queue.get(timeout=60)
    waiter.join(60)
    assert "rank 0 failed" in message and "planted failure in shard-00042.arrow" in message


def test_a_waiting_rank_times_out_without_rank0(tmp_path):
    with pytest.raises(TimeoutError, match="rank 3"):
        cached_indices(tmp_path, {"x": 1}, lambda _: {}, rank=3, timeout_s=0.3, poll_s=0.05)


def test_cached_indices_are_memory_mapped_and_built_once(tmp_path):
    calls = []

    def build(_previous):
        calls.append(1)
        return {"a": np.arange(10)}

    first = cached_indices(tmp_path, {"k": 1}, build)
    second = cached_indices(tmp_path, {"k": 1}, build, rank=2)
    assert len(calls) == 1 and isinstance(second["a"], np.memmap)
    np.testing.assert_array_equal(first["a"], second["a"])


RSS_SCRIPT = textwrap.dedent("""
    import sys
    from training.data import build_blended_dataset
    data = build_blended_dataset(sys.argv[1], 2048, 0, {"train": 1000}, weights={"s": 1.0},
                                 split="100")["train"]
    for i in range(len(data)):
        data[i]
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    print(int(status["RssAnon"].split()[0]) * 1024)  # private memory; shard pages are cache
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_resident_memory_stays_flat_as_data_grows(tmp_path):
    rss = []
    for tokens in (2_000_000, 40_000_000):
        out = tmp_path / str(tokens)
        lengths = np.full(tokens // 1000, 1000)
        docs = [np.resize(np.arange(1, 1000, dtype=np.uint16), n) for n in lengths]
        for d in docs:
            d[-1] = EOD
        write_source(out / "tokens", "s", docs, docs_per_shard=5000)
        build_blended_dataset(out, 2048, 0, {"train": 1000}, weights={"s": 1.0}, split="100")
        result = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(out)], check=True,
                                capture_output=True, text=True)
        rss.append(int(result.stdout))
    assert rss[1] - rss[0] < 8 * 2**20  # the large corpus is 80 MB of tokens, 20x the small
