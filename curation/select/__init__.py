"""Helpers of the `select` stage (curation/stages/select.py): features, OT scores, budget."""
