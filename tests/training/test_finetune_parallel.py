"""LoRA and LoRA-GGPO fine-tuning at (TP, PP, DP) = (2, 1, 1), (2, 2, 1) with sequence
parallelism, and (1, 1, 2) with ZeRO-2 train the same adapters as one process: the same loss
and held-out loss at every step and the same adapter checkpoint (fp32, 1e-5), with the frozen
base bit-identical on every rank, and the same GGPO state in the checkpoint. Real processes
on gloo over loopback, two launches."""

import copy

import pytest
import torch

from tests.training.finetune_setup import finetune_raw, make_base, write_task
from training.checkpoint import save_checkpoint
from training.checkpoint_format import ShardReader, read_index, resolve_checkpoint
from training.config import TrainingConfig
from training.finetune.setup import prepare
from training.finetune.trainer import FinetuneTrainer
from training.launch import launch
from training.parallel.grid import destroy_grid
from training.trainer import setup_process

STEPS = 5


def finetune_and_report(cfg_dicts: list[dict]) -> list:
    """Worker: fine-tune each config; (losses, held-out losses, base unchanged on this rank)."""
    setup_process()
    results = []
    for cfg_dict in cfg_dicts:
        trainer = FinetuneTrainer(TrainingConfig.model_validate(cfg_dict))
        frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
                  if not p.requires_grad}
        records = trainer.run(on_save=save_checkpoint)
        unchanged = all(torch.equal(p, frozen[n]) for n, p in trainer.model.named_parameters()
                        if n in frozen)
        trainer.close()
        results.append(([r["loss"] for r in records],
                        [r["val_loss"] for r in records if "val_loss" in r], unchanged))
    destroy_grid()
    return results


def layout(cfg: dict, run_dir, **parallel) -> dict:
    cfg = copy.deepcopy(cfg)
    cfg["parallel"].update(parallel)
    cfg["train"]["dir"] = str(run_dir)
    return cfg


def adapters(run_dir) -> dict[str, torch.Tensor]:
    """The checkpoint's adapters (`model/`) and GGPO state (`ggpo/`), as global tensors."""
    ckpt = resolve_checkpoint(run_dir)
    reader = ShardReader(ckpt, read_index(ckpt))
    return {key: reader.read_full(key) for key in read_index(ckpt)["tensors"]
            if key.startswith(("model/", "ggpo/"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft-parallel")
    base, task = make_base(root), write_task(root / "task.jsonl")
    configs = {ggpo: prepare(finetune_raw(base, task, root / "x", ggpo=ggpo, steps=STEPS,
                                          save_every=STEPS, eval_every=2), "test", {}).dump()
               for ggpo in (False, True)}
    plans = {  # name -> (world, parallel settings)
        "tp2": (2, {"tp": 2}),
        "dp2-zero2": (2, {"dp": 2, "zero": 2}),
        "tp2-pp2-sp": (4, {"tp": 2, "pp": 2, "sequence_parallel": True}),
    }
    jobs = {"ref": (1, {})} | plans
    results = {}
    for world in (1, 2, 4):
        names = [(name, ggpo) for name, (size, _) in jobs.items() if size == world
                 for ggpo in (False, True)]
        cfgs = [layout(configs[ggpo], root / f"{name}-{ggpo}", **jobs[name][1])
                for name, ggpo in names]
        if world == 1:
            out = finetune_and_report(cfgs)
        else:
            per_rank = launch(world, finetune_and_report, cfgs)
            out = [(r0[0], r0[1], all(per_rank[r][i][2] for r in per_rank))
                   for i, r0 in enumerate(per_rank[0])]
        results.update({key: (res, adapters(root / f"{key[0]}-{key[1]}"))
                        for key, res in zip(names, out, strict=True)})
    return results


@pytest.mark.parametrize("ggpo", [False, True], ids=["lora", "lora-ggpo"])
@pytest.mark.parametrize("name", ["tp2", "tp2-pp2-sp", "dp2-zero2"])
def test_layout_equals_one_process(runs, name, ggpo):
    (losses, val, unchanged), tensors = runs[(name, ggpo)]
    (ref_losses, ref_val, ref_unchanged), ref_tensors = runs[("ref", ggpo)]
    assert unchanged and ref_unchanged  # the frozen base, bit for bit, on every rank
    torch.testing.assert_close(torch.tensor(losses, dtype=torch.float64),
                               torch.tensor(ref_losses, dtype=torch.float64), rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.tensor(val), torch.tensor(ref_val), rtol=1e-5, atol=0)
    assert tensors.keys() == ref_tensors.keys()
    assert all(".lora_" in k for k in tensors if k.startswith("model/"))
    # GGPO's gradient norms: every TP slice written once (rows of a column-parallel linear by
    # each TP rank, a row-parallel one's by TP rank 0), one DP replica, none without GGPO
    assert any(k.startswith("ggpo/") for k in tensors) == ggpo
    for key, tensor in tensors.items():
        error = (tensor - ref_tensors[key]).norm() / ref_tensors[key].norm().clamp_min(1e-12)
        assert error <= 1e-5, f"{key}: relative error {error:.2e}"


def test_ggpo_changes_the_run(runs):
    """Not a no-op: the perturbed run differs from plain LoRA after its first step."""
    (plain, _, _), _ = runs[("ref", False)]
    (perturbed, _, _), _ = runs[("ref", True)]
    assert plain[0] == perturbed[0] and plain[-1] != perturbed[-1]
