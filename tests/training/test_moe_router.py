"""The MoE router, the grouped experts and the layer against plain per-token references
(one process): top-k choice, gates, load-balancing loss, z-loss, the capacity cut, and the
layer's output token by token."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.config import ConfigError, TrainingConfig, load_config, parse_config
from training.moe.router import (
    auxiliary_losses,
    capacity_keep,
    route,
    router_statistics,
)

E, K, T = 6, 2, 40


def reference_route(logits, router):
    """Token by token, as the papers write it."""
    experts, gates = [], []
    for row in logits.tolist():
        if router == "softmax_topk":
            denominator = sum(math.exp(v) for v in row)
            probs = [math.exp(v) / denominator for v in row]
            chosen = sorted(range(E), key=lambda e: -probs[e])[:K]
            weights = [probs[e] for e in chosen]
        else:
            chosen = sorted(range(E), key=lambda e: -row[e])[:K]
            denominator = sum(math.exp(row[e]) for e in chosen)
            weights = [math.exp(row[e]) / denominator for e in chosen]
        experts.append(chosen)
        gates.append(weights)
    return experts, gates


def reference_losses(logits, experts, alpha, beta):
    counts = [0] * E
    for chosen in experts:
        for e in chosen:
            counts[e] += 1
    probs = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row]
             for row in logits.tolist()]
    f = [c / (T * K) for c in counts]
    p = [sum(row[e] for row in probs) / T for e in range(E)]
    aux = alpha * E * sum(fe * pe for fe, pe in zip(f, p, strict=True))
    z = beta * sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits.tolist()) / T
    return aux, z


@pytest.mark.parametrize("router", ["softmax_topk", "topk_softmax"])
def test_router_matches_per_token_reference(router):
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    routing = route(logits, K, router)
    experts, gates = reference_route(logits, router)
    assert routing.experts.tolist() == experts
    torch.testing.assert_close(routing.gates, torch.tensor(gates, dtype=torch.float64))
    aux, z = auxiliary_losses(router_statistics(routing, E), E, K, 0.01, 0.001)
    ref_aux, ref_z = reference_losses(logits, experts, 0.01, 0.001)
    assert aux.item() == pytest.approx(ref_aux, rel=1e-12)
    assert z.item() == pytest.approx(ref_z, rel=1e-12)


def test_load_balancing_loss_is_alpha_when_routing_is_uniform():
    """Switch's normalisation: perfectly balanced routing and probabilities give alpha."""
    logits = torch.zeros(E * 2, E, dtype=torch.float64)
    routing = route(logits, 1, "softmax_topk")
    routing.experts = torch.arange(E).repeat(2).view(-1, 1)
    aux, _ = auxiliary_losses(router_statistics(routing, E), E, 1, 0.5, 0.0)
    assert aux.item() == pytest.approx(0.5)


@pytest.mark.parametrize("policy", ["probs", "position"])
def test_capacity_cut_keeps_each_experts_best_slots(policy):
    logits = torch.randn(T, E, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    routing = route(logits, K, "softmax_topk")
    capacity = math.ceil(1.0 * T * K / E)
    slots = torch.arange(T * K, dtype=torch.float64)
    score = routing.gates.flatten() if policy == "probs" else -slots
    keep = capacity_keep(routing.experts.flatten(), score, capacity, E).tolist()
    expected = [False] * (T * K)
    for e in range(E):
        mine = [s for s in range(T * K) if routing.experts.flatten()[s] == e]
        if policy == "probs":
            mine.sort(key=lambda s: -routing.gates.flatten()[s].item())
        for s in mine[:capacity]:
            expected[s] = True
    assert keep == expected
    assert sum(keep) < T * K  # this seed overflows some expert


def moe_config(**moe) -> dict:
    raw = load_config("moe_tiny").dump()
    raw["model"]["moe"].update(moe)
    raw["model"].update(layers=1, hidden=16, heads=2, kv_heads=2, seq_len=8)
    return raw


def build_layer(**moe):
    from training.moe.layer import MoELayer
    from training.parallel.grid import GridLayout, ProcessGrid

    cfg = TrainingConfig.model_validate(moe_config(**moe))
    grid = ProcessGrid(GridLayout(1, 1, 1), 0, torch.device("cpu"))
    return MoELayer(cfg.model, grid, seed=1, name="blocks.0.mlp", index=0,
                    sequence_parallel=False), cfg.model.moe


def reference_layer(layer, moe, x):
    """Each token through its experts one by one (the weights as the layer holds them)."""
    tokens = x.reshape(-1, x.shape[-1])
    routing = route(F.linear(tokens, layer.router), moe.top_k, moe.router)
    out = torch.zeros_like(tokens)
    for t in range(len(tokens)):
        for slot in range(moe.top_k):
            e = routing.experts[t, slot]
            gate, up = (layer.experts.fc[e] @ tokens[t]).view(-1, 2).unbind(-1)
            out[t] += routing.gates[t, slot] * (layer.experts.proj[e] @ (F.silu(gate) * up))
    return out.view_as(x), routing


def test_layer_equals_per_token_experts_dropless():
    layer, moe = build_layer()
    x = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(0))
    expected, _ = reference_layer(layer, moe, x)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)
    assert layer.stats["train"]["dropped"] == 0


def test_gated_shared_experts_add_sigmoid_gate_times_their_swiglu():
    """Qwen2-MoE's shared expert: every token also gets sigmoid(w . x) * SwiGLU_shared(x)."""
    layer, moe = build_layer(shared_experts=2, shared_expert_gate=True)
    x = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(0))
    routed, _ = reference_layer(layer, moe, x)
    gate, up = (x @ layer.shared.fc.weight.t()).unflatten(-1, (-1, 2)).unbind(-1)
    shared = (F.silu(gate) * up) @ layer.shared.proj.weight.t()
    gates = torch.sigmoid(x @ layer.shared_gate.view(-1))
    assert layer.shared_gate.shape == (1, 16) and gates.std() > 1e-3  # varies per token
    torch.testing.assert_close(layer(x), routed + gates.unsqueeze(-1) * shared, rtol=1e-5,
                               atol=1e-6)


def test_dropped_slots_add_nothing_and_are_counted():
    layer, moe = build_layer(capacity_factor=0.5, drop_policy="position")
    x = torch.randn(3, 8, 16, generator=torch.Generator().manual_seed(0))
    out = layer(x).reshape(-1, 16)
    _, routing = reference_layer(layer, moe, x)
    capacity = math.ceil(0.5 * 24 * moe.top_k / moe.experts)
    # position policy: each expert keeps the first `capacity` slots routed to it
    seen = [0] * moe.experts
    tokens = x.reshape(-1, 16)
    expected = torch.zeros_like(tokens)
    for t in range(len(tokens)):
        for slot in range(moe.top_k):
            e = int(routing.experts[t, slot])
            seen[e] += 1
            if seen[e] <= capacity:
                gate, up = (layer.experts.fc[e] @ tokens[t]).view(-1, 2).unbind(-1)
                expected[t] += routing.gates[t, slot] * (layer.experts.proj[e]
                                                         @ (F.silu(gate) * up))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    dropped = sum(max(0, n - capacity) for n in seen)
    assert dropped > 0 and layer.stats["train"]["dropped"] == dropped


@pytest.mark.parametrize("change,message", [
    ({"model.moe.top_k": 9}, "top_k (9) must not exceed experts (8)"),
    ({"parallel.ep": 3, "parallel.dp": 3}, "model.moe.experts (8) must be divisible by "
     "parallel.ep (3)"),
    ({"parallel.ep": 2}, "parallel.etp * parallel.ep (1 * 2) must divide 1"),
    ({"model.moe.ffn": 63, "parallel.etp": 2, "parallel.tp": 2},
     "model.moe.ffn (63) must be divisible by parallel.etp (2)"),
    ({"model.mlp": "gelu"}, "experts are SwiGLU"),
    ({"model.moe.shared_expert_gate": True}, "shared_expert_gate: true gates the shared "
     "experts: set shared_experts >= 1"),
])
def test_bad_moe_layouts_are_config_errors(change, message):
    raw = load_config("moe_tiny").dump()
    for key, value in change.items():
        section, *rest = key.split(".")
        node = raw[section]
        for part in rest[:-1]:
            node = node[part]
        node[rest[-1]] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("*", r"\*")):
        parse_config(raw)


def test_ep_without_moe_is_an_error():
    raw = load_config("tiny").dump()
    raw["parallel"].update(ep=2, dp=2)
    with pytest.raises(ConfigError, match="need model.moe"):
        parse_config(raw)


def test_mfu_counts_active_parameters():
    """An MoE block's FLOPs are a dense SwiGLU block of width top_k * ffn plus the router."""
    from training.metrics import flops_per_step

    moe = TrainingConfig.model_validate(load_config("moe_tiny").dump()).model
    dense = moe.model_copy(update={"moe": None, "ffn_hidden": moe.moe.top_k * moe.moe.ffn})
    router = 3 * 2 * 8 * moe.seq_len * moe.layers * moe.moe.experts * moe.hidden
    assert flops_per_step(moe, 512, 8) == flops_per_step(dense, 512, 8) + router


def test_paper_configs_size_from_formulas():
    """Mixtral 8x22B: 141B parameters, 39B active; Qwen2-57B-A14B: 57B, 14B active."""
    from training.moe.sizing import moe_size

    mixtral, qwen = moe_size(load_config("mixtral_8x22b")), moe_size(load_config("qwen2_57b_a14b"))
    assert round(mixtral.total / 1e9) == 141 and round(mixtral.active / 1e9) == 39
    assert round(qwen.total / 1e9) == 57 and round(qwen.active / 1e9) == 14


def test_full_recomputation_records_moe_statistics_once(tmp_path):
    """parallel.recompute full reruns each block in the backward (the whole block, with
    torch's early stop off): the logged MoE counts stay those of one forward."""
    from torch.utils.checkpoint import set_checkpoint_early_stop

    from training.moe.metrics import take_moe_metrics
    from training.parallel.grid import destroy_grid
    from training.trainer import Trainer

    counts = []
    for recompute in ("none", "full"):
        raw = moe_config(capacity_factor=0.5)
        raw["parallel"]["recompute"] = recompute
        raw["batch"].update({"micro": 2, "global": 2})
        raw["train"].update(steps=1, eval_every=0, save_every=0, dir=str(tmp_path / recompute))
        trainer = Trainer(TrainingConfig.model_validate(raw))
        with set_checkpoint_early_stop(False):
            trainer.train_step()
        counts.append(take_moe_metrics(trainer.model, trainer.cfg.model, trainer.grid.device,
                                       "train"))
        destroy_grid()
    for measured in counts:
        measured.pop("moe_a2a_s")
    assert counts[0]["moe_dropped"] > 0 and counts[0] == counts[1]


def test_resuming_with_or_without_the_shared_expert_gate_is_refused(tmp_path):
    """The gate changes what the saved tensors compute; a checkpoint from before the key
    existed (no `shared_expert_gate` in its config) reads as ungated."""
    from training.checkpoint_compat import check_resume
    from training.checkpoint_format import CheckpointError

    gated = moe_config(shared_experts=1, shared_expert_gate=True)
    plain = moe_config(shared_experts=1)
    del plain["model"]["moe"]["shared_expert_gate"]
    assert check_resume(tmp_path, plain, 512, moe_config(shared_experts=1), 512) == [
        "model.moe.shared_expert_gate: None -> False"]
    with pytest.raises(CheckpointError, match="model.moe.shared_expert_gate: False in the "
                                              "checkpoint, True in this config"):
        check_resume(tmp_path, plain, 512, gated, 512)
