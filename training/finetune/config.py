"""The `finetune:` section of a training config (`pretrain finetune CONFIG`).

It names the checkpoint to start from, the LoRA adapters (rank, alpha, dropout, which linears),
GGPO's two coefficients (or null for plain LoRA), the task data (JSONL) and how long to train.
Shape problems that need the model (a target no block has, a rank larger than a layer) are
found by `lora_problems`, which the CLI runs before any process starts.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from curation.config import StrictModel

# The linears a block has, by the name they carry inside it (training/blocks.py). A target
# matches a linear whose name is the target or ends with "." + target: `proj` is both
# `attn.proj` and `mlp.proj`, `attn.proj` only the attention's. `qkv` is the attention's input
# projection however it is stored: one `qkv`, or `q` and `kv` with grouped-query attention.
BLOCK_LINEARS = ("attn.qkv", "attn.q", "attn.kv", "attn.proj", "mlp.fc", "mlp.proj")
ALIASES = {"qkv": ("attn.qkv", "attn.q", "attn.kv"), "attn.qkv": ("attn.qkv", "attn.q", "attn.kv")}


class LoraConfig(StrictModel):
    rank: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0.0, description="the update is (alpha / rank) * B A")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="on the adapter's input")
    targets: list[str] = Field(default_factory=lambda: ["qkv", "proj", "fc"], min_length=1)


class GgpoConfig(StrictModel):
    """LoRA-GGPO's perturbation coefficients (training/finetune/ggpo.py): `sigma` scales the
    weight-norm term, `beta` the gradient-norm term."""

    sigma: float = Field(0.03, ge=0.0)
    beta: float = Field(0.01, ge=0.0)


class TaskDataConfig(StrictModel):
    paths: list[str] = Field(min_length=1, description="JSONL files, one example a line")
    format: str = Field("jsonl", pattern="^jsonl$")
    prompt_field: str | None = None
    completion_field: str | None = None
    text_field: str | None = None
    tokenizer: str | None = Field(
        None, description="tokenizer.json; default the base run's data.curated tokenizer")

    @model_validator(mode="after")
    def _fields(self) -> TaskDataConfig:
        pair = self.prompt_field is not None or self.completion_field is not None
        if pair and self.text_field is not None:
            raise ValueError("give prompt_field + completion_field, or text_field, not both")
        if pair and (self.prompt_field is None or self.completion_field is None):
            raise ValueError("prompt_field and completion_field go together")
        if not pair and self.text_field is None:
            raise ValueError("give prompt_field + completion_field (loss on the completion "
                             "only) or text_field (loss on every token)")
        return self


class FinetuneConfig(StrictModel):
    init_from: str = Field(description="the base checkpoint (or run folder): frozen weights")
    lora: LoraConfig | None = Field(
        default_factory=LoraConfig, description="null: full fine-tuning (every weight trains)")
    ggpo: GgpoConfig | None = None
    data: TaskDataConfig
    epochs: float = Field(1.0, gt=0.0, description="passes over the training examples")
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="examples held out")

    @model_validator(mode="after")
    def _ggpo_needs_lora(self) -> FinetuneConfig:
        if self.ggpo is not None and self.lora is None:
            raise ValueError("finetune.ggpo perturbs LoRA-adapted weights: it needs finetune.lora")
        return self


def matching_linears(target: str) -> list[str]:
    if target in ALIASES:
        return list(ALIASES[target])
    return [name for name in BLOCK_LINEARS if name == target or name.endswith("." + target)]
