"""`pretrain export-hf` of llama-arch checkpoints: transformers loads the folder as
LlamaForCausalLM with no custom code; its logits equal ours within 1e-4 (fp32), its loss
equals ours, and greedy generation picks the same tokens. Grouped-query attention without
biases (the preset) and multi-head attention with biases and a tied output layer."""

import json

import pytest
import torch
import torch.nn.functional as F

from training.checkpoint import save_checkpoint
from training.cli import main
from training.config import TrainingConfig
from training.parallel.grid import destroy_grid
from training.trainer import Trainer

transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 50, 24


def train_and_export(root, **model) -> tuple:
    cfg = TrainingConfig.model_validate({
        "model": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 4, "kv_heads": 2,
                  "ffn_hidden": 48, "seq_len": SEQ, "vocab_size": VOCAB, "pad_vocab_to": 8,
                  "rope_theta": 500.0, **model},
        "batch": {"micro": 4, "global": 8},
        "optim": {"lr": 1e-2, "warmup": 1},
        "train": {"steps": 4, "save_every": 4, "dir": str(root / "run"), "seed": 3},
        "data": {"synthetic": True}})
    trainer = Trainer(cfg)
    trainer.run(on_save=save_checkpoint)
    trainer.close()
    destroy_grid()
    assert main(["export-hf", str(root / "run"), str(root / "hf")]) == 0
    return trainer.model.eval(), root / "hf"


def our_logits(model, tokens: torch.Tensor) -> torch.Tensor:
    hidden = model.embedding(tokens)
    for block in model.blocks.values():
        hidden = block(hidden)
    return F.linear(model.head.ln(hidden), model.output_layer().weight)


@pytest.mark.parametrize("model", [{}, {"kv_heads": 4, "bias": True, "tie_embeddings": True}],
                         ids=["gqa-untied-no-bias", "mha-tied-bias"])
def test_transformers_llama_logits_and_greedy_tokens_equal_ours(tmp_path, model):
    ours_model, out = train_and_export(tmp_path, **model)
    with torch.no_grad():
        compare(ours_model, out, model.get("kv_heads", 2))


def compare(ours_model, out, kv_heads: int) -> None:
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_key_value_heads"] == kv_heads
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    synthetic = torch.arange(5, 5 + 3 * SEQ, 3).remainder(VOCAB).unsqueeze(0)  # as trained on
    torch.testing.assert_close(hf(synthetic).logits, our_logits(ours_model, synthetic),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(hf(synthetic, labels=synthetic).loss,  # HF shifts the labels
                               ours_model(synthetic[:, :-1], synthetic[:, 1:]), atol=1e-5, rtol=0)
    prompt = synthetic[:, :6]
    ours = prompt
    for _ in range(SEQ - 6):
        ours = torch.cat([ours, our_logits(ours_model, ours)[:, -1:].argmax(-1)], dim=1)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    theirs = hf.generate(prompt, max_new_tokens=SEQ - 6, do_sample=False, attention_mask=None)
    assert theirs.tolist() == ours.tolist()


def test_a_mixed_architecture_is_a_clear_export_error(tmp_path, capsys):
    cfg = TrainingConfig.model_validate({
        "model": {"arch": "llama", "mlp": "gelu", "layers": 1, "hidden": 16, "heads": 2,
                  "seq_len": 8, "vocab_size": 50},
        "batch": {"micro": 2, "global": 2}, "optim": {"lr": 1e-3},
        "train": {"steps": 1, "save_every": 1, "dir": str(tmp_path / "run")},
        "data": {"synthetic": True}})
    trainer = Trainer(cfg)
    trainer.run(on_save=save_checkpoint)
    trainer.close()
    destroy_grid()
    assert main(["export-hf", str(tmp_path / "run"), str(tmp_path / "hf")]) == 2
    assert "model.mlp is gelu, Llama needs swiglu" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
