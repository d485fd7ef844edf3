"""Curation stages, in the canonical order of the flow (DESIGN.md)."""
