"""The training config: shipped configs by name, --set overrides, and clear errors that name
the YAML path and what is allowed; the LR schedule and batch ramp-up formulas."""

import json

import pytest

from training.cli import main
from training.config import ConfigError, load_config, padded_vocab_size
from training.metrics import flops_per_step
from training.optim import global_batch_size, learning_rate


@pytest.mark.parametrize("name", ["tiny", "gpt_125m", "gpt_1.3b", "mtnlg_530b"])
def test_shipped_configs_load_by_name(name):
    cfg = load_config(name)
    assert cfg.model.layers > 0


def test_mtnlg_config_is_the_papers():
    cfg = load_config("mtnlg_530b")
    assert (cfg.model.layers, cfg.model.hidden, cfg.model.heads, cfg.model.seq_len) == \
        (105, 20480, 128, 2048)
    assert (cfg.parallel.tp, cfg.parallel.pp) == (8, 35)
    assert cfg.batch.rampup[:2] == (32, 32) and cfg.batch.global_batch == 1920


def test_overrides_parse_values_as_yaml(tmp_path):
    cfg = load_config("tiny", ["parallel.tp=2", "parallel.zero=0",
                               "batch.rampup=[4, 4, 64]", "optim.schedule_unit=samples",
                               "optim.lr=1e-3", f"train.dir={tmp_path}"])
    assert cfg.parallel.tp == 2 and cfg.parallel.zero == 0
    assert cfg.batch.rampup == (4, 4, 64) and cfg.optim.lr == 1e-3


def test_config_from_a_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text((load_config.__globals__["CONFIG_DIR"] / "tiny.yaml").read_text())
    assert load_config(str(path)).model.hidden == 64


@pytest.mark.parametrize("override,message", [
    (["model.hiden=64"],
     r"--set model\.hiden=64: unknown key model\.hiden \(allowed: arch, bias, dropout, "),
    (["device=tpu"], r"device: Input should be 'cpu' or 'cuda'"),
    (["dtype=fp16"], r"dtype: Input should be 'fp32' or 'bf16'"),
    (["parallel.recompute=some"], r"parallel\.recompute: Input should be 'none', 'full' or"),
    (["model.heads=5"], r"hidden \(64\) must be divisible by heads \(5\)"),
    (["parallel.tp=8"], r"model\.heads \(4\) must be divisible by parallel\.tp \(8\)"),
    (["batch.global=18"], r"batch\.global \(18\) must be a multiple of batch\.micro"),
    (["parallel.dp=3"], r"batch\.global \(16\) must be a multiple of batch\.micro \* parallel\.dp"),
    (["model.vocab_size=null"], r"model\.vocab_size is required when data is synthetic"),
    (["model.pad_vocab_to=1", "model.vocab_size=511", "parallel.tp=2"],
     r"padded vocabulary \(511\) must be divisible by parallel\.tp \(2\)"),
    (["batch.rampup=[6, 4, 100]", "optim.schedule_unit=samples"],
     r"batch\.rampup start and increment must be multiples of 4"),
    (["optim.lr=-1"], r"optim\.lr: Input should be greater than 0"),
])
def test_bad_configs_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("tiny", override)


def test_unknown_config_and_bad_override():
    with pytest.raises(ConfigError, match=r"no shipped config .*shipped: gpt_1\.3b, gpt_125m"):
        load_config("nope")
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config("tiny", ["parallel.tp"])
    with pytest.raises(ConfigError, match="parallel.tp is not a section"):
        load_config("tiny", ["parallel.tp.x=1"])


def test_cli_rejects_bad_layout_before_starting(capsys):
    assert main(["tiny", "--tp", "2", "--nproc", "3"]) == 2
    assert "tp=2 x pp=1 x dp=1 = 2 ranks, but the world has 3" in capsys.readouterr().err
    assert main(["tiny", "--set", "model.heads=3"]) == 2
    assert "model: hidden (64) must be divisible by heads (3)" in capsys.readouterr().err


def test_cli_refuses_a_pipeline_the_schedule_cannot_run(capsys):
    assert main(["tiny", "--pp", "2", "--set", "parallel.schedule=interleaved",
                 "--set", "parallel.virtual_stages=3"]) == 2
    assert "divisible by parallel.pp * parallel.virtual_stages" in capsys.readouterr().err


def test_cli_trains_tiny_in_process(tmp_path):
    assert main(["tiny", "--set", "train.steps=3", "--set", "train.eval_every=3",
                 "--set", f"train.dir={tmp_path}"]) == 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert {"loss", "lr", "grad_norm", "consumed_samples", "tokens_per_s", "tflops", "mfu",
            "val_loss"} <= records[-1].keys()


def test_padded_vocab_is_independent_of_tp():
    assert padded_vocab_size(50257, 128) == 50304
    assert padded_vocab_size(512, 128) == 512


def test_lr_warmup_then_cosine_to_min_lr():
    cfg = load_config("tiny", ["optim.lr=1.0", "optim.min_lr=0.1", "optim.warmup=10"]).optim
    assert learning_rate(5, cfg, 110) == pytest.approx(0.5)
    assert learning_rate(10, cfg, 110) == pytest.approx(1.0)
    assert learning_rate(60, cfg, 110) == pytest.approx(0.55)  # half-way: the mean
    assert learning_rate(110, cfg, 110) == pytest.approx(0.1)
    assert learning_rate(500, cfg, 110) == pytest.approx(0.1)


def test_batch_rampup_like_mtnlg():
    batch = load_config("mtnlg_530b").batch
    assert global_batch_size(0, batch) == 32
    per_increment = 5859375 / 59
    assert global_batch_size(int(per_increment) + 1, batch) == 64
    assert global_batch_size(30 * int(per_increment) + 31, batch) == 32 + 30 * 32
    assert global_batch_size(10**9, batch) == 1920


def test_megatron_flops_formula():
    # GPT-3 175B at batch 1536 (Narayanan et al. 2021): 72 B s L h^2 (1 + s/6h + V/12Lh).
    cfg = load_config("mtnlg_530b", ["model.layers=96", "model.hidden=12288", "model.heads=96",
                                     "parallel.tp=8", "parallel.pp=8"]).model
    flops = flops_per_step(cfg, 51200, 1536)
    expected = 72 * 1536 * 2048 * 96 * 12288**2 * (1 + 2048 / (6 * 12288)
                                                     + 51200 / (12 * 96 * 12288))
    assert flops == pytest.approx(expected)
    assert flops / 1536 / 2048 == pytest.approx(6 * 174.6e9 * 1.0, rel=0.1)


def test_zero1_is_read_as_zero_with_a_deprecation_warning(tmp_path):
    old = tmp_path / "old.yaml"  # a config written before parallel.zero existed
    old.write_text((load_config.__globals__["CONFIG_DIR"] / "tiny.yaml").read_text()
                   .replace("zero: 1", "zero1: false"))
    with pytest.warns(DeprecationWarning, match="parallel.zero1 is deprecated"):
        cfg = load_config(str(old))
    assert cfg.parallel.zero == 0 and "zero1" not in cfg.dump()["parallel"]
    with pytest.raises(ConfigError, match="contradicts parallel.zero=2"):
        load_config(str(old), ["parallel.zero=2"])


def test_zero_stage_3_with_a_pipeline_is_a_config_error_saying_why():
    assert load_config("tiny", ["parallel.zero=3"]).parallel.zero == 3
    with pytest.raises(ConfigError, match=r"parallel.zero: 3 with parallel.pp > 1 is not "
                                          r"supported: .*all-gathered twice per micro-batch"):
        load_config("tiny", ["parallel.zero=3", "parallel.pp=2"])
