"""Deduplication helpers: the keeper rule both dedup stages share, and fuzzy dedup's
MinHash signatures, LSH candidate edges, exact verification and connected components,
each a small module that works on whole partitions at once."""
