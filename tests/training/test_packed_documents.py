"""Documents inside a packed sample kept apart, as Megatron's --reset-position-ids,
--reset-attention-mask and --eod-mask-loss: the masks, a token's logits not depending on the
previous document, and every layout (TP + SP, PP, recomputation) training as one process."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.training.planted_out import EOD, write_planted_out
from tests.training.test_trainer_equivalence import assert_same_run, train_and_gather
from training.batches import document_masks, prepare_micro_batches
from training.config import ConfigError, DataConfig, ModelConfig, load_config
from training.launch import launch
from training.model import GPT
from training.parallel.grid import build_grid, destroy_grid

ALL_ON = DataConfig(curated="x", reset_position_ids=True, reset_attention_mask=True,
                    eod_mask_loss=True)


def test_masks_follow_the_eod_tokens():
    inputs = torch.tensor([[5, EOD, 7, 8, EOD, 9], [1, 2, 3, 4, 5, 6]])
    masks = document_masks(inputs, EOD, ALL_ON)
    assert masks.position_ids.tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 4, 5]]
    assert masks.loss_mask.tolist() == [[1, 0, 1, 1, 0, 1], [1] * 6]
    allowed = masks.attention_mask[0, 0].int().tolist()
    assert allowed == [[1, 0, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0, 0],
                       [0, 0, 1, 0, 0, 0],
                       [0, 0, 1, 1, 0, 0],
                       [0, 0, 1, 1, 1, 0],
                       [0, 0, 0, 0, 0, 1]]
    assert torch.equal(masks.attention_mask[1, 0], torch.ones(6, 6, dtype=torch.bool).tril())
    rows = torch.cat([inputs, inputs[:, :1]], dim=1)
    off = prepare_micro_batches(rows, 1, DataConfig(curated="x"), EOD)
    assert len(off) == 2 and off[0].documents is None
    assert torch.equal(off[0].targets, rows[:1, 1:])


@pytest.fixture(scope="module")
def model():
    grid = build_grid(1, 1, 1)
    cfg = ModelConfig(layers=2, hidden=32, heads=4, seq_len=16)
    yield GPT(cfg, 64, grid, seed=5).eval()
    destroy_grid()


def logits(model, row: list[int], data: DataConfig | None) -> torch.Tensor:
    """The model's logits for one row (the output layer's input, captured by a hook)."""
    inputs = torch.tensor([row])
    documents = document_masks(inputs, EOD, data) if data is not None else None
    captured = []
    handle = model.head.ln.register_forward_hook(lambda m, i, out: captured.append(out))
    with torch.no_grad():
        model(inputs, torch.zeros_like(inputs), documents=documents)
    handle.remove()
    return F.linear(captured[0], model.embedding.word.weight)[0]


def test_a_tokens_logits_do_not_depend_on_the_previous_document(model):
    document = [11, 12, 13, 14, 15, 16]
    first = [3, 4, 5, 6, 7, EOD] + document + [EOD, 9, 9, 9]
    other = [40, 41, 42, EOD] + document + [EOD, 9, 9, 9, 9, 9]  # another, shorter document
    b_first, b_other = slice(6, 12), slice(4, 10)
    on = logits(model, first, ALL_ON)[b_first]
    torch.testing.assert_close(on, logits(model, other, ALL_ON)[b_other], rtol=1e-5, atol=1e-5)
    alone = logits(model, document + [EOD] * 10, ALL_ON)[:6]
    torch.testing.assert_close(on, alone, rtol=1e-5, atol=1e-5)
    # without the mask the same tokens see the previous document
    off = logits(model, first, None)[b_first]
    assert (off - logits(model, other, None)[b_other]).abs().max() > 1e-3
    masked_only = DataConfig(curated="x", reset_attention_mask=True)
    same_length = [30, 31, 32, 33, 34, EOD] + document + [EOD, 9, 9, 9]
    torch.testing.assert_close(logits(model, first, masked_only)[b_first],
                               logits(model, same_length, masked_only)[b_first],
                               rtol=1e-5, atol=1e-5)


def test_document_options_need_curated_data():
    with pytest.raises(ConfigError, match=r"data\.reset_attention_mask need documents"):
        load_config("tiny", ["data.reset_attention_mask=true"])


def packed_config(out, run_dir, tp=1, pp=1, sp=False, recompute="none", keep_apart=True):
    return {
        "model": {"layers": 2, "hidden": 32, "heads": 4, "seq_len": 16, "pad_vocab_to": 8},
        "parallel": {"tp": tp, "pp": pp, "sequence_parallel": sp, "recompute": recompute,
                     "bucket_mb": 0.02},
        "batch": {"micro": 2, "global": 8},
        "optim": {"lr": 1e-2, "min_lr": 1e-3, "warmup": 2, "weight_decay": 0.1, "clip": 0.5},
        "train": {"steps": 4, "eval_every": 2, "eval_iters": 1, "seed": 7, "dir": str(run_dir)},
        "data": {"curated": str(out), "reset_position_ids": keep_apart,
                 "reset_attention_mask": keep_apart, "eod_mask_loss": keep_apart},
    }


def test_layouts_with_documents_kept_apart_equal_one_process(tmp_path):
    out = write_planted_out(tmp_path / "out", {"web": 0.7, "books": 0.3})
    reference, plain = train_and_gather([packed_config(out, tmp_path / "ref"),
                                         packed_config(out, tmp_path / "plain", keep_apart=False)])
    # the options change what is trained on (far beyond the 1e-5 the layouts must meet)
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(reference[0], plain[0],
                                                            strict=True)) > 1e-3
    layouts = [packed_config(out, tmp_path / "tp", tp=2, sp=True, recompute="selective"),
               packed_config(out, tmp_path / "pp", pp=2, recompute="full")]
    tp_result, pp_result = launch(2, train_and_gather, layouts)[0]
    assert_same_run(tp_result, reference)
    # rank 0 holds the first pipeline stage: its parameters, and the losses of the whole model
    stage0 = {name: reference[1][name] for name in pp_result[1]}
    assert "blocks.0.attn.qkv.weight" in stage0 and "blocks.1.attn.qkv.weight" not in stage0
    assert_same_run(pp_result, (reference[0], stage0))
