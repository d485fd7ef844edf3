"""GOT-D on model embeddings: a textmill checkpoint (mean-pooled final hidden states) and a
sentence-transformers folder, both built here from random weights (nothing downloaded)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from curation.select.embeddings import embed
from curation.select.got import chunk_count, got_scores
from curation.spec import SpecError
from tests.curation.test_select_stage import GOT, _all_docs, _run, _spec, corpus  # noqa: F401
from training.embed import CheckpointEncoder

WORDS = " ".join(["river valley water bank mill fields snow bridge boat",
                  "int return void main struct printf char while for"])


def _tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator([WORDS] * 4, trainers.BpeTrainer(
        vocab_size=80, special_tokens=["[UNK]", "<|endoftext|>"]))
    tokenizer.save(str(path))
    return tokenizer.get_vocab_size()


@pytest.fixture(scope="module")
def model_cluster():
    """A one-worker cluster inside this process: the models' libraries (torch, transformers)
    are imported once, here, not again in fresh worker processes (the select stage's
    multi-process behaviour is tested with hashed embeddings in test_select_stage.py)."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPT trained 2 steps; its curated OUT holds the tokenizer the encoder finds."""
    from training.batches import SyntheticBatchSource
    from training.checkpoint import save_checkpoint
    from training.config import TrainingConfig
    from training.parallel.grid import destroy_grid
    from training.trainer import Trainer

    root = tmp_path_factory.mktemp("ckpt")
    (root / "curated").mkdir()
    vocab = _tokenizer(root / "curated" / "tokenizer.json")
    cfg = TrainingConfig.model_validate({
        "model": {"layers": 2, "hidden": 32, "heads": 4, "seq_len": 16, "pad_vocab_to": 64},
        "batch": {"micro": 4, "global": 4}, "optim": {"lr": 1e-2, "warmup": 1},
        "train": {"steps": 2, "save_every": 2, "dir": str(root / "run"), "seed": 3},
        "data": {"curated": str(root / "curated")}})
    source = SyntheticBatchSource(vocab, cfg.model.seq_len, seed=3)
    trainer = Trainer(cfg, sources=(source, source))
    trainer.run(on_save=save_checkpoint)
    trainer.close()
    destroy_grid()
    return root / "run", trainer.model.eval(), root / "curated" / "tokenizer.json"


def test_checkpoint_encoder_is_the_mean_final_hidden_state_of_each_text(checkpoint):
    run, model, tokenizer_json = checkpoint
    from tokenizers import Tokenizer

    texts = ["river bank", "", "int main void return char " * 5, "snow", "boat mill fields"]
    got = CheckpointEncoder(run, batch_size=2).encode(texts)  # batches mix lengths: padding
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    with torch.no_grad():
        for text, row in zip(texts, got, strict=True):
            ids = tokenizer.encode(text).ids[:16]
            if not ids:
                assert not row.any()
                continue
            hidden = model.embedding(torch.tensor([ids]))
            for block in model.blocks.values():
                hidden = block(hidden)
            expected = model.head.ln(hidden)[0].mean(0).numpy()
            np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)


def _reference_choice(root, vectors_of, budget):
    docs = _all_docs(root)
    import json

    target = [json.loads(x)["body"] for x in (root / "target.jsonl").read_text().splitlines()]
    pool, tgt = vectors_of(docs["text"].tolist()), vectors_of(target)
    k = chunk_count(len(docs), 15)
    scores = np.empty(len(docs))
    for c in range(k):
        scores[c::k] = got_scores(pool[c::k], tgt, 0.1, 300)
    return set(docs["id"].iloc[np.lexsort((np.arange(len(docs)), scores))[:budget]])


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-300)).astype(np.float32)


def test_got_on_checkpoint_embeddings_matches_one_process(corpus, checkpoint,  # noqa: F811
                                                          model_cluster):
    run, _, _ = checkpoint
    select = {**GOT, "embedding": {"checkpoint": str(run)}, "budget": {"docs": 10}}
    kept, ledger, _ = _run(corpus, select, model_cluster)
    encoder = CheckpointEncoder(run)
    assert set(kept["id"]) == _reference_choice(corpus, lambda t: _unit(encoder.encode(t)), 10)
    assert len(kept) + len(ledger) == 42


@pytest.fixture(scope="module")
def sentence_model(tmp_path_factory):
    """A random-init one-layer BERT with a word-level vocabulary, saved as a
    sentence-transformers folder (mean pooling)."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    root = tmp_path_factory.mktemp("st")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS.split()))]
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(root / "vocab.txt")).save_pretrained(root / "hf")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32,
                         max_position_embeddings=64)).save_pretrained(root / "hf")
    word = Transformer(str(root / "hf"), max_seq_length=48)
    width = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pooling = Pooling(width(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pooling], device="cpu").save(str(root / "st"))
    return root / "st"


def test_got_on_sentence_transformers_embeddings_matches_one_process(
        corpus, sentence_model, model_cluster):  # noqa: F811
    from sentence_transformers import SentenceTransformer

    select = {**GOT, "embedding": {"sentence_transformers": str(sentence_model)},
              "budget": {"docs": 10}}
    kept, ledger, _ = _run(corpus, select, model_cluster)
    model = SentenceTransformer(str(sentence_model), device="cpu")
    assert set(kept["id"]) == _reference_choice(
        corpus, lambda t: _unit(model.encode(t, convert_to_numpy=True)), 10)
    assert len(kept) + len(ledger) == 42


def test_missing_sentence_transformers_names_the_key(corpus, sentence_model,  # noqa: F811
                                                     monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    with pytest.raises(SpecError) as info:
        _spec(corpus, {**GOT, "embedding": {"sentence_transformers": str(sentence_model)},
                       "budget": {"docs": 3}})
    assert any(p.startswith("stages.select.embedding.sentence_transformers: ")
               and "not installed" in p for p in info.value.problems), info.value.problems
    with pytest.raises(ImportError, match="stages.select.embedding.sentence_transformers: .*"
                                          "not installed"):
        embed(["text"], "sentence_transformers", path=str(sentence_model) + "-not-loaded-yet")
