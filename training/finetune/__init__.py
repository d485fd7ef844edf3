"""LoRA fine-tuning (optionally with GGPO) of a textmill checkpoint: `pretrain finetune`."""
