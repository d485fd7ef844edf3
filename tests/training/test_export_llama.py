"""`pretrain export-hf` of llama-arch checkpoints: transformers loads the folder as
LlamaForCausalLM (an MoE as MixtralForCausalLM or, with shared experts, Qwen2MoeForCausalLM)
with no custom code; its logits equal ours within 1e-4 (fp32), its loss
equals ours, and greedy generation picks the same tokens. Grouped-query attention without
biases (the preset) and multi-head attention with biases and a tied output layer."""

import json

import pytest
import torch

from tests.training.hf_export import (
    assert_same_greedy_tokens,
    our_logits,
    train_and_export,
    train_checkpoint,
)
from training.cli import main

transformers = pytest.importorskip("transformers")

VOCAB, SEQ = 50, 24


def llama_run(root, **model) -> dict:
    return {
        "model": {"arch": "llama", "layers": 2, "hidden": 32, "heads": 4, "kv_heads": 2,
                  "ffn_hidden": 48, "seq_len": SEQ, "vocab_size": VOCAB, "pad_vocab_to": 8,
                  "rope_theta": 500.0, **model},
        "batch": {"micro": 4, "global": 8},
        "optim": {"lr": 1e-2, "warmup": 1},
        "train": {"steps": 4, "save_every": 4, "dir": str(root / "run"), "seed": 3},
        "data": {"synthetic": True}}


@pytest.mark.parametrize("model", [{}, {"kv_heads": 4, "bias": True, "tie_embeddings": True}],
                         ids=["gqa-untied-no-bias", "mha-tied-bias"])
def test_transformers_llama_logits_and_greedy_tokens_equal_ours(tmp_path, model):
    ours_model = train_and_export(llama_run(tmp_path, **model), tmp_path / "hf")
    with torch.no_grad():
        compare(ours_model, tmp_path / "hf", model.get("kv_heads", 2))


def compare(ours_model, out, kv_heads: int, architecture: str = "LlamaForCausalLM") -> None:
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [architecture]
    assert config["num_key_value_heads"] == kv_heads
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == architecture
    synthetic = torch.arange(5, 5 + 3 * SEQ, 3).remainder(VOCAB).unsqueeze(0)  # as trained on
    torch.testing.assert_close(hf(synthetic).logits, our_logits(ours_model, synthetic),
                               atol=1e-4, rtol=0)
    torch.testing.assert_close(hf(synthetic, labels=synthetic).loss,  # HF shifts the labels
                               ours_model(synthetic[:, :-1], synthetic[:, 1:]), atol=1e-5, rtol=0)
    assert_same_greedy_tokens(hf, ours_model, synthetic[:, :6], SEQ, pad_id=0)


def test_a_mixed_architecture_is_a_clear_export_error(tmp_path, capsys):
    train_checkpoint({
        "model": {"arch": "llama", "mlp": "gelu", "layers": 1, "hidden": 16, "heads": 2,
                  "seq_len": 8, "vocab_size": 50},
        "batch": {"micro": 2, "global": 2}, "optim": {"lr": 1e-3},
        "train": {"steps": 1, "save_every": 1, "dir": str(tmp_path / "run")},
        "data": {"synthetic": True}})
    assert main(["export-hf", str(tmp_path / "run"), str(tmp_path / "hf")]) == 2
    assert "model.mlp is gelu, Llama needs swiglu" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


def test_transformers_mixtral_logits_and_greedy_tokens_equal_ours(tmp_path):
    """A llama-arch MoE (top-2 of 4 SwiGLU experts, softmax over the chosen logits) exports
    as MixtralForCausalLM; dropless, its logits equal ours within 1e-4."""
    run = llama_run(tmp_path)
    run["model"]["moe"] = {"experts": 4, "top_k": 2, "ffn": 24, "router": "topk_softmax"}
    ours_model = train_and_export(run, tmp_path / "hf")
    with torch.no_grad():
        compare(ours_model, tmp_path / "hf", 2, "MixtralForCausalLM")


@pytest.mark.parametrize("router", ["softmax_topk", "topk_softmax"])
def test_transformers_qwen2_moe_logits_and_greedy_tokens_equal_ours(tmp_path, router):
    """A llama-arch MoE with a gated shared expert (top-2 of 4, shared width 2 x ffn, block 1
    dense by `every: 2`) exports as Qwen2MoeForCausalLM: `softmax_topk` as norm_topk_prob
    false, `topk_softmax` as true; dropless, its logits equal ours within 1e-4."""
    run = llama_run(tmp_path)
    run["model"]["moe"] = {"experts": 4, "top_k": 2, "ffn": 24, "router": router, "every": 2,
                           "shared_experts": 2, "shared_expert_gate": True}
    ours_model = train_and_export(run, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["mlp_only_layers"] == [1]
    assert config["norm_topk_prob"] is (router == "topk_softmax")
    with torch.no_grad():
        compare(ours_model, tmp_path / "hf", 2, "Qwen2MoeForCausalLM")


@pytest.mark.parametrize("moe,messages", [
    ({"router": "softmax_topk", "every": 2},
     ["model.moe.router is softmax_topk, Mixtral needs topk_softmax",
      "model.moe.every is 2, Mixtral needs 1"]),
    ({"router": "softmax_topk", "shared_experts": 1},
     ["Qwen2-MoE cannot load: model.moe.shared_expert_gate is false"]),
], ids=["mixtral", "qwen2-moe"])
def test_an_moe_transformers_cannot_compute_is_a_clear_export_error(tmp_path, capsys, moe,
                                                                     messages):
    run = llama_run(tmp_path)
    run["model"]["moe"] = {"experts": 4, "top_k": 2, "ffn": 24, **moe}
    run["train"].update(steps=1, save_every=1)
    train_checkpoint(run)
    assert main(["export-hf", str(tmp_path / "run"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    for message in messages:
        assert message in err
    assert not (tmp_path / "hf").exists()
