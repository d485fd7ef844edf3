"""Context parallelism: the TP x CP x DP x PP grid's rank order and groups, its config errors,
and training equivalence with one process (fp32, 1e-5 losses and parameters) for llama_tiny
shapes at (TP, CP, PP, DP) = (1,2,1,1), (2,2,1,1) with sequence parallelism, (1,2,2,1) under
the interleaved schedule, (2,2,1,2), for learned positions (gpt2 arch) at CP 2, and for packed
documents kept apart (positions, attention mask, loss mask) at CP 4 and at CP 2 x PP 2.
Real processes on gloo over loopback; layouts of one world size share a launch."""

import pytest

from tests.training.llama_runs import llama_config, resume_at_one_process
from tests.training.planted_out import write_planted_out
from tests.training.test_pipeline_parallel import train_and_gather
from tests.training.test_trainer_equivalence import assert_same_run
from training.checkpoint_format import read_index
from training.config import ConfigError, parse_config
from training.launch import launch
from training.parallel.grid import GridLayout


def test_grid_orders_tp_cp_dp_pp_and_names_the_groups():
    layout = GridLayout(tp=2, pp=2, dp=2, cp=2)
    assert layout.coords4(0b1011) == (1, 0, 1, 1)  # pp 1, dp 0, cp 1, tp 1
    assert layout.rank(1, 0, 1, cp_rank=1) == 11
    assert layout.groups("tp")[0] == [0, 1]
    assert layout.groups("cp")[0] == [0, 2]
    assert layout.groups("dp")[0] == [0, 4]
    assert layout.groups("dp_cp")[0] == [0, 2, 4, 6]
    assert layout.groups("pp")[0] == [0, 8]
    assert sorted(map(tuple, layout.groups("model"))) == [
        (0, 1, 8, 9), (2, 3, 10, 11), (4, 5, 12, 13), (6, 7, 14, 15)]


@pytest.mark.parametrize("parallel,model,message", [
    ({"cp": 3}, {}, r"model.seq_len \(16\) into 2 \* cp chunks"),
    ({"cp": 2, "tp": 8, "sequence_parallel": True}, {"heads": 8, "hidden": 64, "seq_len": 24},
     r"each CP rank's 12 tokens over parallel.tp \(8\)"),
])
def test_impossible_context_layouts_are_config_errors(tmp_path, parallel, model, message):
    raw = llama_config(tmp_path)
    raw["parallel"].update(parallel)
    raw["model"].update(model)
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def cp_config(run_dir, **parallel) -> dict:
    """llama_tiny's shapes at lr 2e-3: at 3e-3 one weight (blocks.0.mlp.proj) ends 1.2e-5 from
    the reference at CP 2 while losses agree to 1e-6 — Adam turning rounding-sized gradient
    differences (each CP rank averages its own tokens first) into lr-sized steps."""
    raw = llama_config(run_dir, **parallel)
    raw["optim"].update(lr=2e-3, min_lr=1e-3)
    return raw


def gpt2_config(run_dir, **parallel) -> dict:
    raw = cp_config(run_dir, **parallel)
    raw["model"] = {"layers": 2, "hidden": 32, "heads": 4, "seq_len": 16, "vocab_size": 60,
                    "pad_vocab_to": 8}
    return raw


def deep_config(run_dir, **parallel) -> dict:
    """Four layers: two pipeline ranks of two virtual stages each."""
    raw = cp_config(run_dir, **parallel)
    raw["model"]["layers"] = 4
    return raw


def documents_config(out, run_dir, **parallel) -> dict:
    """Packed documents of the planted corpus, every keep-apart option on."""
    raw = cp_config(run_dir, **parallel)
    raw["batch"] = {"micro": 2, "global": 4}
    raw["data"] = {"curated": str(out), "reset_position_ids": True,
                   "reset_attention_mask": True, "eod_mask_loss": True}
    return raw


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return write_planted_out(tmp_path_factory.mktemp("out"), {"web": 0.7, "books": 0.3})


@pytest.fixture(scope="module")
def references(tmp_path_factory, planted):
    made = {"llama": cp_config, "gpt2": gpt2_config, "deep": deep_config,
            "documents": lambda run_dir: documents_config(planted, run_dir)}
    return {name: train_and_gather([make(tmp_path_factory.mktemp(name))])[0]
            for name, make in made.items()}


@pytest.mark.parametrize("arch,layout", [
    ("llama", dict(cp=2)),
    ("llama", dict(tp=2, cp=2, sequence_parallel=True)),
    ("gpt2", dict(cp=2)),
], ids=["llama-cp2", "llama-tp2-cp2-sp", "gpt2-learned-positions-cp2"])
def test_context_parallel_equals_single_process(references, tmp_path, arch, layout):
    cfg = (cp_config if arch == "llama" else gpt2_config)(tmp_path, **layout)
    world = parse_config(cfg).parallel.world_size
    (result,) = launch(world, train_and_gather, [cfg])[0]
    assert_same_run(result, references[arch])


def test_context_with_pipeline_and_documents_on_four_ranks(references, planted, tmp_path):
    """(1,2,2,1) interleaved: activations on the pipeline wire are the CP slice; packed
    documents at CP 4 (two tokens a chunk: most blocks cross a document boundary) and at
    CP 2 x PP 2 (the loss mask's denominator reaching the last stage)."""
    configs = [deep_config(tmp_path / "pp", cp=2, pp=2, schedule="interleaved",
                           virtual_stages=2),
               documents_config(planted, tmp_path / "cp4", cp=4),
               documents_config(planted, tmp_path / "cp2pp2", cp=2, pp=2)]
    deep, cp4, cp2pp2 = launch(4, train_and_gather, configs)[0]
    assert_same_run(deep, references["deep"])
    assert_same_run(cp4, references["documents"])
    assert_same_run(cp2pp2, references["documents"])


def test_context_tensor_and_data_parallel_on_eight_ranks(references, tmp_path):
    """(TP, CP, PP, DP) = (2,2,1,2): replicated gradients reduced over DP x CP."""
    (result,) = launch(8, train_and_gather, [deep_config(tmp_path, tp=2, cp=2, dp=2)])[0]
    assert_same_run(result, references["deep"])


@pytest.mark.parametrize("zero", [0, 2])
def test_checkpoint_at_cp2_resumes_at_cp1(tmp_path, zero):
    """CP ranks hold the same weights; the optimizer state is replicated (stage 0: the
    parameters round-robin over the DP x CP writers) or sharded over DP x CP (stage 2: each
    CP rank writes its own shard); either way the run continues at CP 1."""

    def cfg(run_dir, parallel, save_every):
        raw = cp_config(run_dir, cp=2 if parallel else 1)
        raw["train"]["save_every"] = save_every
        raw["parallel"]["zero"] = zero
        return raw

    resume_at_one_process(tmp_path, 2, cfg)
    index = read_index(tmp_path / "parallel" / "checkpoints" / "step-00000002")
    assert index["layout"]["cp"] == 2
