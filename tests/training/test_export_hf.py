"""`pretrain export-hf`: transformers loads the folder as GPT2LMHeadModel and AutoTokenizer
with no custom code; its logits equal ours within 1e-4 and greedy generation picks the same
tokens. The tokenizer is a byte-level BPE trained in the test on Python's own docs."""

import json
from pathlib import Path

import pytest
import torch

from tests.training.hf_export import (
    assert_same_greedy_tokens,
    our_logits,
    train_and_export,
    train_checkpoint,
)
from training.batches import SyntheticBatchSource
from training.cli import main

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

EOD = "<|endoftext|>"


def train_tokenizer(path: Path, vocab_size: int = 300) -> int:
    from pydoc_data.topics import topics

    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOD], show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(list(topics.values()), trainer)
    tokenizer.save(str(path))
    return tokenizer.get_vocab_size()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny GPT trained a few steps and checkpointed; its config names a curated OUT that
    holds the run's tokenizer.json (batches are synthetic over that vocabulary)."""
    root = tmp_path_factory.mktemp("export")
    curated = root / "curated"
    curated.mkdir()
    vocab = train_tokenizer(curated / "tokenizer.json")
    source = SyntheticBatchSource(vocab, 32, seed=3)
    model = train_and_export({
        "model": {"layers": 2, "hidden": 32, "heads": 4, "seq_len": 32, "pad_vocab_to": 64},
        "batch": {"micro": 4, "global": 8},
        "optim": {"lr": 1e-2, "warmup": 1},
        "train": {"steps": 4, "save_every": 4, "dir": str(root / "run"), "seed": 3},
        "data": {"curated": str(curated)}}, root / "hf", sources=(source, source))
    return model, root / "hf", curated / "tokenizer.json"


def test_folder_holds_the_hugging_face_files(trained_run):
    _, out, _ = trained_run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json"} <= names
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == 320  # 300 tokens padded to a multiple of 64
    assert config["n_positions"] == 32 and config["activation_function"] == "gelu_new"


@torch.no_grad()
def test_transformers_logits_and_greedy_tokens_equal_ours(trained_run):
    model, out, tokenizer_json = trained_run
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = "The with statement"
    expected_ids = tokenizers.Tokenizer.from_file(str(tokenizer_json)).encode(text).ids
    prompt = tokenizer(text, return_tensors="pt").input_ids
    assert prompt[0].tolist() == expected_ids and prompt.shape[1] < 20
    assert tokenizer.eos_token == EOD and tokenizer.decode(prompt[0]) == text

    torch.testing.assert_close(hf(prompt).logits, our_logits(model, prompt), atol=1e-4, rtol=0)
    synthetic = torch.arange(5, 5 + 3 * 32, 3).remainder(300).unsqueeze(0)  # as trained on
    torch.testing.assert_close(hf(synthetic).logits, our_logits(model, synthetic), atol=1e-4,
                               rtol=0)
    torch.testing.assert_close(hf(synthetic, labels=synthetic).loss,  # HF shifts the labels
                               model(synthetic[:, :-1], synthetic[:, 1:]), atol=1e-5, rtol=0)

    assert_same_greedy_tokens(hf, model, prompt, 32, pad_id=tokenizer.eos_token_id)


def test_synthetic_run_exports_without_tokenizer(tmp_path, capsys):
    train_checkpoint({
        "model": {"layers": 1, "hidden": 16, "heads": 2, "seq_len": 8, "vocab_size": 50},
        "batch": {"micro": 2, "global": 2}, "optim": {"lr": 1e-3},
        "train": {"steps": 1, "save_every": 1, "dir": str(tmp_path / "run")},
        "data": {"synthetic": True}})
    assert main(["export-hf", str(tmp_path / "run" / "checkpoints"), str(tmp_path / "hf")]) == 0
    assert "no tokenizer files" in capsys.readouterr().err
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf")
    assert hf.config.vocab_size == 128 and hf.config.n_layer == 1


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["export-hf", str(tmp_path), str(tmp_path / "hf")]) == 2
    assert "no index.json" in capsys.readouterr().err
