"""Curation stages, one module each, registered in flow order in registry.py (DESIGN.md).

Where code lives: a stage is one module here; helpers that serve one stage are a package
named after that stage beside this one (curation/normalize, curation/language,
curation/heuristics, curation/quality, curation/dedup for both dedup stages,
curation/decontam); code several stages share sits in curation/ itself.
"""
