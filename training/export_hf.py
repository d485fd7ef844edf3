"""`pretrain export-hf CHECKPOINT OUT`: a checkpoint as a Hugging Face folder (config.json,
model.safetensors, tokenizer files) that `transformers` loads with no custom code: a gpt2-arch
model as `GPT2LMHeadModel`, a llama-arch one as `LlamaForCausalLM` (export_llama.py), a
llama-arch MoE as `MixtralForCausalLM` (export_mixtral.py), or with shared experts as
`Qwen2MoeForCausalLM` (export_qwen2_moe.py), and the tokenizer as `AutoTokenizer`.

Our GPT is GPT-2's architecture (pre-LN blocks, learned positions, tied output layer) with
three differences of storage, undone here: GPT-2's `Conv1D` stores weights as [in, out] (ours
are [out, in] as `nn.Linear`); its `c_attn` output is [q | k | v], each head-major inside,
where ours is head-major outside ([head][q|k|v][head_dim], so a TP slice holds whole heads);
and its vocabulary is the padded one (the padded rows are never targets, so they never win
an argmax worth speaking of). Tensors come from the global checkpoint, whatever the layout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from curation.tokenize import EOD_TOKEN
from training.blocks import NORM_EPS
from training.checkpoint_format import ShardReader, read_index, resolve_checkpoint
from training.config import ModelConfig, TrainingConfig
from training.export_llama import llama_config, llama_problems, llama_tensors
from training.export_mixtral import mixtral_config, mixtral_problems, mixtral_tensors
from training.export_qwen2_moe import qwen2_moe_config, qwen2_moe_problems, qwen2_moe_tensors

# Our MLP is F.gelu(approximate="tanh"): Hugging Face calls that "gelu_new".
ACTIVATION = "gelu_new"
# What GPT2LMHeadModel computes; any other value of these keys cannot be exported as GPT-2.
GPT2_KEYS = {"norm": "layernorm", "position": "learned", "mlp": "gelu", "tie_embeddings": True,
             "bias": True}


def gpt2_problems(cfg: ModelConfig) -> list[str]:
    problems = [f"model.{key} is {getattr(cfg, key)}, GPT-2 needs {value}"
                for key, value in GPT2_KEYS.items() if getattr(cfg, key) != value]
    if cfg.kv != cfg.heads:
        problems.append(f"model.kv_heads is {cfg.kv}, GPT-2 needs heads ({cfg.heads})")
    return problems


def gpt2_tensors(reader: ShardReader, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """GPT-2 parameter names -> tensors, from our global checkpoint tensors."""
    def ours(name: str) -> torch.Tensor:
        return reader.read_full(f"model/{name}")

    h, heads = cfg.hidden, cfg.heads
    head_dim = h // heads
    tensors = {"transformer.wte.weight": ours("embedding.word.weight"),
               "transformer.wpe.weight": ours("embedding.position"),
               "transformer.ln_f.weight": ours("head.ln.weight"),
               "transformer.ln_f.bias": ours("head.ln.bias")}
    for i in range(cfg.layers):
        src, dst = f"blocks.{i}.", f"transformer.h.{i}."
        # [head][q|k|v][head_dim] -> [q|k|v][head][head_dim], then Conv1D's [in, out].
        qkv_weight = ours(src + "attn.qkv.weight").view(heads, 3, head_dim, h).transpose(0, 1)
        qkv_bias = ours(src + "attn.qkv.bias").view(heads, 3, head_dim).transpose(0, 1)
        tensors.update({
            dst + "ln_1.weight": ours(src + "ln1.weight"),
            dst + "ln_1.bias": ours(src + "ln1.bias"),
            dst + "attn.c_attn.weight": qkv_weight.reshape(3 * h, h).t(),
            dst + "attn.c_attn.bias": qkv_bias.reshape(3 * h),
            dst + "attn.c_proj.weight": ours(src + "attn.proj.weight").t(),
            dst + "attn.c_proj.bias": ours(src + "attn.proj.bias"),
            dst + "ln_2.weight": ours(src + "ln2.weight"),
            dst + "ln_2.bias": ours(src + "ln2.bias"),
            dst + "mlp.c_fc.weight": ours(src + "mlp.fc.weight").t(),
            dst + "mlp.c_fc.bias": ours(src + "mlp.fc.bias"),
            dst + "mlp.c_proj.weight": ours(src + "mlp.proj.weight").t(),
            dst + "mlp.c_proj.bias": ours(src + "mlp.proj.bias"),
        })
    return {name: tensor.contiguous() for name, tensor in tensors.items()}


def gpt2_config(cfg: ModelConfig, vocab_size: int, eod_id: int | None) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": vocab_size,  # padded: the embedding's rows, not the tokenizer's size
        "n_positions": cfg.seq_len, "n_embd": cfg.hidden, "n_layer": cfg.layers,
        "n_head": cfg.heads, "n_inner": cfg.ffn, "activation_function": ACTIVATION,
        "layer_norm_epsilon": NORM_EPS, "initializer_range": cfg.init_std,
        "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
        "scale_attn_weights": True, "tie_word_embeddings": True, "use_cache": True,
        "bos_token_id": eod_id, "eos_token_id": eod_id, "torch_dtype": "float32",
    }


def write_tokenizer(tokenizer_json: Path, out: Path, max_length: int,
                    vocab_size: int) -> int | None:
    """tokenizer.json plus the config files AutoTokenizer reads; returns the EOD token's id."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    if tokenizer.get_vocab_size(with_added_tokens=True) > vocab_size:
        raise ValueError(f"{tokenizer_json}: {tokenizer.get_vocab_size()} tokens, more than the "
                         f"model's vocabulary of {vocab_size}: not the run's tokenizer")
    shutil.copyfile(tokenizer_json, out / "tokenizer.json")
    eod_id = tokenizer.token_to_id(EOD_TOKEN)
    special = {} if eod_id is None else {key: EOD_TOKEN for key in
                                         ("bos_token", "eos_token", "unk_token")}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
        "clean_up_tokenization_spaces": False, **special}, indent=1))
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=1))
    return eod_id


def find_tokenizer(train_cfg: TrainingConfig) -> Path | None:
    """The curated OUT's tokenizer.json the run trained on; None for synthetic data."""
    if train_cfg.data.is_synthetic:
        return None
    from training.data.remote_cache import local_curated

    path = local_curated(train_cfg.data.curated) / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the run's tokenizer (data.curated) is missing; "
                                "pass --tokenizer PATH")
    return path


def _target(cfg: ModelConfig) -> tuple[str, tuple]:
    """The Hugging Face architecture a model exports as, with its (problems, tensors, config)
    functions: an MoE with shared experts as Qwen2-MoE, one without as Mixtral."""
    if cfg.moe is not None and cfg.moe.shared_experts:
        return "Qwen2-MoE", (qwen2_moe_problems, qwen2_moe_tensors, qwen2_moe_config)
    if cfg.moe is not None:
        return "Mixtral", (mixtral_problems, mixtral_tensors, mixtral_config)
    if cfg.arch == "llama":
        return "Llama", (llama_problems, llama_tensors, llama_config)
    return "GPT-2", (gpt2_problems, gpt2_tensors, gpt2_config)


def export_hf(checkpoint: Path, out: Path, tokenizer: Path | None = None) -> list[Path]:
    """Write the Hugging Face folder; returns the files written."""
    ckpt = resolve_checkpoint(Path(checkpoint))
    index = read_index(ckpt)
    train_cfg = TrainingConfig.model_validate(index["config"])
    cfg, vocab_size = train_cfg.model, index["vocab_size"]
    target, (problems_of, tensors, config) = _target(cfg)
    problems = problems_of(cfg)
    if cfg.moe is not None and cfg.arch != "llama":
        problems.insert(0, f"model.arch is {cfg.arch}, {target} needs llama")
    if problems:
        raise ValueError(f"{ckpt}: a model.arch {cfg.arch} checkpoint that Hugging Face's "
                         f"{target} cannot load: " + "; ".join(problems))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or find_tokenizer(train_cfg)
    eod_id = write_tokenizer(Path(tokenizer), out, cfg.seq_len, vocab_size) if tokenizer \
        else None
    save_file(tensors(ShardReader(ckpt, index), cfg), str(out / "model.safetensors"),
              metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config(cfg, vocab_size, eod_id), indent=1))
    return sorted(out.iterdir())
