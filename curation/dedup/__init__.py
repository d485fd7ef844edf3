"""Fuzzy deduplication: MinHash signatures, LSH candidate edges, exact verification and
connected components, each a small module that works on whole partitions at once."""
