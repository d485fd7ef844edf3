"""Downstream tasks, one registry for decontamination and evaluation.

A task named in a corpus spec's `decontaminate.tasks` and in `pretrain eval --tasks` is one
entry: the same files and the same text fields, so the corpus is cleaned against exactly the
test set the model is scored on. Pure Python (no torch): curation and training both import it.
"""
