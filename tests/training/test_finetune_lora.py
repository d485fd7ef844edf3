"""`pretrain finetune` in one process: GGPO's perturbation against a plain per-element
reference of its formula, the frozen base bit-identical after training, adapter-only
checkpoints, the merged model's forward, PEFT export loaded by `peft` onto the HF export, and
bad input refused before any process starts."""

import math

import pytest
import torch
import torch.nn.functional as F
import yaml

from tests.training.finetune_setup import finetune_raw, make_base, write_task
from training.checkpoint import save_checkpoint
from training.checkpoint_format import read_index
from training.cli import main
from training.config import TrainingConfig
from training.finetune.ggpo import draw_noise
from training.finetune.setup import prepare
from training.finetune.trainer import FinetuneTrainer
from training.parallel.grid import destroy_grid
from training.trainer import Trainer

BASES = {}


def base_of(arch: str, tmp_path_factory):
    """One tiny pre-trained base per architecture for the whole module."""
    if arch not in BASES:
        root = tmp_path_factory.mktemp(f"ft-{arch}")
        BASES[arch] = make_base(root, arch), write_task(root / "task.jsonl"), root
    return BASES[arch]


@pytest.fixture
def base(tmp_path_factory):
    return base_of("gpt2", tmp_path_factory)


@pytest.fixture(params=["gpt2", "llama"])
def any_base(request, tmp_path_factory):
    return base_of(request.param, tmp_path_factory)


def write_config(path, raw) -> str:
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def reference_perturbation(layer, old_a, old_b, grad_a, grad_b, sigma, beta, noise):
    """(G1)-(G4) element by element, with plain Python sums (one process, no TP): W' from the
    current adapters, G from the last step's gradients at that step's adapters."""
    A, B, W = layer.lora_A.tolist(), layer.lora_B.tolist(), layer.weight.tolist()
    oA, oB = old_a.tolist(), old_b.tolist()
    gA, gB, s = grad_a.tolist(), grad_b.tolist(), layer.scale
    rows, cols, rank = len(W), len(W[0]), len(A)
    eps = torch.zeros(rows, cols, dtype=torch.float64)
    for i in range(rows):
        merged = [W[i][j] + s * sum(B[i][k] * A[k][j] for k in range(rank)) for j in range(cols)]
        grad = [s * sum(oB[i][k] * gA[k][j] + gB[i][k] * oA[k][j] for k in range(rank))
                for j in range(cols)]
        std = (sigma * math.sqrt(sum(v * v for v in merged)) + beta * sum(g * g for g in grad)) \
            / math.sqrt(rows)
        for j in range(cols):
            eps[i, j] = std * noise[i][j]
    return eps


def test_ggpo_perturbation_is_the_formula_and_base_stays(base, tmp_path):
    base_dir, task, _ = base
    raw = finetune_raw(base_dir, task, tmp_path / "run", steps=3)
    raw["parallel"]["zero"], raw["optim"]["clip"] = 0, 0.0  # gradients untouched by the step
    trainer = FinetuneTrainer(prepare(raw, "test", {}))
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
              if not p.requires_grad}
    assert frozen and all("lora_" not in n for n in frozen)
    assert all("lora_" in n for n, p in trainer.model.named_parameters() if p.requires_grad)
    adapters = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n)
    assert trainer.optimizer.local_numel == adapters  # optimizer state for adapters only
    seen = {}  # (G2) reads A, B and their gradients before the update

    def snapshot():
        seen.update({name: [t.detach().clone() for t in (layer.lora_A, layer.lora_B,
                                                         layer.lora_A.grad, layer.lora_B.grad)]
                     for name, layer in trainer.adapted.items()})
        FinetuneTrainer.on_gradients_reduced(trainer)

    trainer.on_gradients_reduced = snapshot
    trainer.train_step()  # step 1: no gradient yet, so no perturbation
    assert all(layer.perturbation is None for layer in trainer.adapted.values())
    trainer.ggpo.begin_step(2)
    cfg = trainer.cfg.finetune.ggpo
    for name in ("blocks.0.attn.qkv" if "blocks.0.attn.qkv" in trainer.adapted
                 else "blocks.0.attn.q", "blocks.1.mlp.proj"):
        layer = trainer.adapted[name]
        noise = draw_noise(layer.full_shape, trainer.cfg.train.seed, 2, name).tolist()
        expected = reference_perturbation(layer, *seen[name], cfg.sigma, cfg.beta, noise)
        torch.testing.assert_close(layer.perturbation.double(), expected, rtol=1e-5,
                                   atol=1e-9)
        assert layer.perturbation.abs().max() > 0
        # the step's forward runs at W0 + epsilon (+ the adapter), in training only
        x = torch.randn(2, 3, layer.full_shape[1])
        bias = 0 if layer.bias is None else layer.bias
        perturbed = F.linear(x, layer.weight + layer.perturbation) + bias + \
            layer.scale * x @ layer.lora_A.T @ layer.lora_B.T
        torch.testing.assert_close(layer(x), perturbed)
        layer.eval()
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight) + bias +
                                   layer.scale * x @ layer.lora_A.T @ layer.lora_B.T)
        layer.train()
    trainer.run()  # two more steps at perturbed weights
    for n, p in trainer.model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{n} changed"
    trainer.close()
    destroy_grid()


@torch.no_grad()
def our_logits(model, tokens):
    hidden = model.embedding(tokens)
    for block in model.blocks.values():
        hidden = block(hidden)
    return F.linear(model.head.ln(hidden), model.output_layer().weight)


def test_finetune_merge_and_peft_export(any_base, tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    base_dir, task, root = any_base
    run = tmp_path / "run"
    config = write_config(tmp_path / "ft.yaml", finetune_raw(base_dir, task, run, save_every=2))
    assert main(["finetune", config]) == 0
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    keys = set(read_index(ckpt)["tensors"])
    # the adapters and their moments only, and GGPO's last gradient norms per adapted linear
    assert keys and all(".lora_" in k for k in keys if not k.startswith("ggpo/"))
    assert {k.split("/")[0] for k in keys} == {"model", "exp_avg", "exp_avg_sq", "ggpo"}
    # unmerged: the fine-tune resumed from its own checkpoint
    tuned = FinetuneTrainer(prepare(yaml.safe_load(open(config)), config, {}))
    assert tuned.resumed_from == ckpt
    tuned.model.eval()
    tokens = torch.randint(0, 300, (2, 48))
    unmerged = our_logits(tuned.model, tokens)
    assert any(layer.lora_B.abs().max() > 0 for layer in tuned.adapted.values())
    tuned.close()
    destroy_grid()
    merged_dir = tmp_path / "merged"
    assert main(["finetune", "merge", str(run), str(merged_dir)]) == 0
    merged_cfg = TrainingConfig.model_validate(read_index(merged_dir)["config"]).model_dump(
        by_alias=True)
    merged_cfg["train"].update(init_from=str(merged_dir), dir=str(tmp_path / "plain"))
    from training.batches import SyntheticBatchSource
    source = SyntheticBatchSource(300, 48, seed=1)
    plain = Trainer(TrainingConfig.model_validate(merged_cfg), sources=(source, source))
    merged = our_logits(plain.model.eval(), tokens)
    plain.close()
    destroy_grid()
    torch.testing.assert_close(merged, unmerged, rtol=0, atol=1e-5)
    # the merged checkpoint loads in transformers with the same logits
    assert main(["export-hf", str(merged_dir), str(tmp_path / "hf-merged")]) == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf-merged").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(tokens).logits, unmerged, rtol=0, atol=1e-4)
    # the PEFT adapter on the base's export gives the same logits
    assert main(["export-hf", str(base_dir), str(tmp_path / "hf-base")]) == 0
    assert main(["export-peft", str(run), str(tmp_path / "peft")]) == 0
    hf_base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf-base")
    adapted = peft.PeftModel.from_pretrained(hf_base, tmp_path / "peft").eval()
    with torch.no_grad():
        torch.testing.assert_close(adapted(tokens).logits, unmerged, rtol=0, atol=1e-4)


def adapters_of(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters()
            if p.requires_grad}


def test_ggpo_resumed_run_equals_an_uninterrupted_one(base, tmp_path):
    """GGPO's state (the last step's gradient row norms) goes into the checkpoint: stopped
    after step 2 and resumed, the run's steps 3-4 are those of one run (fp32, 1e-6)."""
    base_dir, task, _ = base

    def finetune(run_dir, stops):
        raw = finetune_raw(base_dir, task, run_dir, steps=4, save_every=2)
        losses = []
        for until in stops:
            trainer = FinetuneTrainer(prepare(raw, "test", {}))
            losses += [r["loss"] for r in trainer.run(until=until, on_save=save_checkpoint)]
            weights = adapters_of(trainer)
            trainer.close()
            destroy_grid()
        return losses, weights

    whole, whole_weights = finetune(tmp_path / "whole", [4])
    parts, part_weights = finetune(tmp_path / "parts", [2, 4])
    torch.testing.assert_close(torch.tensor(parts, dtype=torch.float64),
                               torch.tensor(whole, dtype=torch.float64), rtol=1e-6, atol=0)
    for name, weight in whole_weights.items():
        torch.testing.assert_close(part_weights[name], weight, rtol=1e-6, atol=1e-9)


def test_bad_input_is_refused_before_any_process(base, tmp_path, capsys):
    base_dir, task, root = base
    arch = read_index(base_dir / "checkpoints" /
                      (base_dir / "checkpoints" / "latest").read_text().strip())
    cases = {
        "nope": ({"lora": {"rank": 4, "targets": ["qkv", "nope"]}},
                 "finetune.lora.targets: 'nope' is no linear"),
        "rank": ({"lora": {"rank": 64, "targets": ["fc"]}},
                 "finetune.lora.rank (64) is larger than mlp.fc"),
    }
    other = dict(arch["config"]["model"], hidden=64)
    cases["arch"] = ({"model": other}, "is a checkpoint of another architecture")
    cases["zero3"] = ({"parallel": {"zero": 3}}, "parallel.zero: 3 is not supported")
    for label, (change, message) in cases.items():
        raw = finetune_raw(base_dir, task, tmp_path / label)
        raw["finetune"].update(change.get("lora") and {"lora": change["lora"]} or {})
        if "model" in change:
            raw["model"] = change["model"]
        raw["parallel"].update(change.get("parallel", {}))
        assert main(["finetune", write_config(tmp_path / f"{label}.yaml", raw)]) == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert not (tmp_path / label).exists()  # nothing started, nothing written


def test_bad_task_line_is_named(base, tmp_path, capsys):
    base_dir, _, _ = base
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    raw = finetune_raw(base_dir, bad, tmp_path / "run")
    assert main(["finetune", write_config(tmp_path / "c.yaml", raw)]) == 2
    assert f"{bad}:2: field 'completion' is missing" in capsys.readouterr().err


def test_loss_mask_covers_the_completion_and_long_prompts_lose_their_start(base):
    from training.finetune.data import encode, load_tokenizer

    _, _, root = base
    tokenizer, eod = load_tokenizer(root / "curated" / "tokenizer.json")
    prompt, completion = tokenizer.encode("Return the name").ids, tokenizer.encode(" f").ids
    task = encode([("Return the name", " f"), ("", "a text")], tokenizer, eod, seq_len=16)
    row, mask = task.tokens[0], task.loss_mask[0]
    answer = completion + [eod]
    assert list(row[: len(prompt) + len(answer)]) == prompt + answer
    # target j is token j + 1: counted exactly for the completion and its EOD
    counted = [j + 1 for j in range(16) if mask[j]]
    assert counted == list(range(len(prompt), len(prompt) + len(answer)))
    text = tokenizer.encode("a text").ids + [eod]
    assert task.loss_mask[1].sum() == len(text) - 1  # every text token after the first
    long = encode([("word " * 40, " f")], tokenizer, eod, seq_len=8)
    assert long.truncated == 1 and list(long.tokens[0][-len(answer):]) == answer
