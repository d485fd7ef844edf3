"""textmill curation: raw text sources to a curated, deduplicated, decontaminated corpus."""

__version__ = "0.1.0"
