"""Llama-style blocks (RMSNorm, RoPE, SwiGLU, grouped-query attention, untied output): the
presets and config errors, the published 8B shape, the MFU formula, and equivalence with one
process (fp32, 1e-5) at TP 2 with sequence parallelism, TP 2 with multi-query attention (the
single KV head replicated over TP), PP 2 and DP 2. Real processes on gloo over loopback."""

import pytest
import torch

from tests.training.llama_runs import llama_config, resume_at_one_process
from tests.training.test_pipeline_parallel import train_and_gather
from tests.training.test_trainer_equivalence import assert_same_run
from training.checkpoint_format import CheckpointError
from training.config import ConfigError, TrainingConfig, load_config, parse_config
from training.launch import launch
from training.metrics import flops_per_step
from training.model import count_parameters
from training.parallel.grid import destroy_grid
from training.trainer import Trainer


def test_llama_preset_sets_the_group_and_explicit_keys_override(tmp_path):
    model = parse_config(llama_config(tmp_path)).model
    assert (model.norm, model.position, model.mlp, model.tie_embeddings, model.bias) == (
        "rmsnorm", "rope", "swiglu", False, False)
    raw = llama_config(tmp_path)
    raw["model"].update(tie_embeddings=True, ffn_hidden=None)
    model = parse_config(raw).model
    assert model.tie_embeddings and model.norm == "rmsnorm"
    assert model.ffn == 256  # 2/3 * 4 * 32 = 85.3, rounded up to a multiple of 256
    gpt2 = load_config("tiny").model
    assert (gpt2.norm, gpt2.position, gpt2.mlp, gpt2.kv) == ("layernorm", "learned", "gelu", 4)


def test_llama3_8b_has_the_published_shape():
    cfg = load_config("llama3_8b")
    m = cfg.model
    assert (m.layers, m.hidden, m.heads, m.kv, m.ffn, m.seq_len, m.rope_theta) == (
        32, 4096, 32, 8, 14336, 8192, 500000.0)
    assert round(count_parameters(m, 128256) / 1e9, 2) == 8.03  # as published
    assert load_config("llama_tiny").model.arch == "llama"


def test_mfu_formula_keeps_the_paper_for_gpt2_and_counts_gqa_and_swiglu():
    gpt2 = load_config("tiny").model
    s, h, L, V = gpt2.seq_len, gpt2.hidden, gpt2.layers, 512
    paper = 72.0 * 8 * s * L * h * h * (1 + s / (6 * h) + V / (12 * L * h))
    assert flops_per_step(gpt2, V, 8) == pytest.approx(paper, rel=1e-12)
    llama = load_config("llama_tiny").model
    h, f, kv = llama.hidden, llama.ffn, 2 * llama.kv * llama.hidden // llama.heads
    weights = h * (h + kv) + h * h + 3 * h * f
    expected = 3.0 * 8 * s * (llama.layers * (2 * weights + 4 * s * h) + 2 * h * V)
    assert flops_per_step(llama, V, 8) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("overrides,message", [
    ({"kv_heads": 3}, r"model.kv_heads \(3\) must divide model.heads \(4\)"),
    ({"hidden": 36, "ffn_hidden": 64}, r"the head size \(hidden / heads = 9\) must be even"),
])
def test_impossible_attention_shapes_are_config_errors(tmp_path, overrides, message):
    raw = llama_config(tmp_path)
    raw["model"].update(overrides)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_kv_heads_fewer_than_tp_are_replicated_not_an_error(tmp_path):
    parse_config(llama_config(tmp_path, tp=4, kv_heads=2))


def test_kv_heads_neither_dividing_nor_divided_by_tp_is_an_error(tmp_path):
    raw = llama_config(tmp_path, tp=4, kv_heads=6)
    raw["model"].update(heads=12, hidden=48, ffn_hidden=64)
    with pytest.raises(ConfigError, match=r"model.kv_heads \(6\) and parallel.tp \(4\)"):
        parse_config(raw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return {kv: train_and_gather([llama_config(tmp_path_factory.mktemp(f"ref{kv}"),
                                               kv_heads=kv)])[0] for kv in (2, 1)}


@pytest.mark.parametrize("layout", [
    dict(tp=2, sequence_parallel=True, recompute="selective"),
    dict(tp=2, kv_heads=1),  # multi-query: the KV head replicated over TP
    dict(pp=2),
    dict(dp=2),
], ids=["tp2-sp-selective", "tp2-mqa", "pp2", "dp2"])
def test_llama_layout_equals_single_process(reference, tmp_path, layout):
    cfg = llama_config(tmp_path, **layout)
    world = cfg["parallel"]["tp"] * cfg["parallel"]["pp"] * cfg["parallel"]["dp"]
    (result,) = launch(world, train_and_gather, [cfg])[0]
    records, params = result
    assert "output.weight" in params and "embedding.position" not in params
    assert not any(name.endswith(".bias") for name in params)
    assert_same_run(result, reference[cfg["model"]["kv_heads"]])
    assert torch.isfinite(torch.tensor([r["loss"] for r in records])).all()


def test_checkpoint_at_tp2_reshards_to_tp1_and_guards_the_architecture(tmp_path):
    """Multi-query attention (the KV head replicated over TP) and SwiGLU's interleaved
    gate/up rows: a TP 2 checkpoint resumed at TP 1 continues the TP 2 run; a resume with
    another norm is refused."""

    def cfg(run_dir, parallel, save_every):
        raw = llama_config(run_dir, tp=2 if parallel else 1, kv_heads=1)
        raw["train"]["save_every"] = save_every
        return raw

    resume_at_one_process(tmp_path, 2, cfg)
    other = cfg(tmp_path / "one", False, 0)  # the resumed run: its checkpoint is llama
    other["model"]["norm"] = "layernorm"
    with pytest.raises(CheckpointError, match="model.norm: rmsnorm in the checkpoint, "
                                              "layernorm in this config"):
        Trainer(TrainingConfig.model_validate(other))
    destroy_grid()
