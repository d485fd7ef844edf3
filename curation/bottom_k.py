"""A seeded bottom-k sample of documents per class, drawn on the cluster.

Every document gets a uniform hash of (seed, salt, id); a class's sample is its k documents
with the smallest hashes, in hash order (ties by id). That set depends on the ids alone,
not on partitioning or worker count. It is drawn in two passes over the partitions, each
merged on the workers (curation.aggregate): the k smallest hashes of each class give its
cutoff, then the rows at or under the cutoffs are gathered. The `curate` process receives
k hashes and k rows per class, whatever the size of the corpus.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from curation.aggregate import map_reduce, result
from curation.quality.sampling import uniform_draws
from curation.storage import read_parquet_table


def class_labels(sources: pd.Series, classes: list[list[str]] | None) -> np.ndarray:
    """Per document the index of the class (a list of sources) it belongs to, or -1;
    every document is class 0 when `classes` is None."""
    if classes is None:
        return np.zeros(len(sources), dtype=np.int64)
    labels = np.full(len(sources), -1, dtype=np.int64)
    for c, names in enumerate(classes):
        labels[sources.isin(names).to_numpy()] = c
    return labels


def _hashed(path: str, classes, seed: int, salt: str, columns: list[str]):
    wanted = ["id", *(["source"] if classes is not None else []), *columns]
    docs = read_parquet_table(path, columns=list(dict.fromkeys(wanted))).to_pandas()
    labels = class_labels(docs["source"] if classes is not None else docs["id"], classes)
    return docs, labels, uniform_draws(docs["id"].astype(str).tolist(), seed, salt=salt)


def smallest_hashes(path: str, classes, seed: int, salt: str, k: int) -> list[np.ndarray]:
    """Pass 1 on one partition: the k smallest hashes of each class."""
    _, labels, h = _hashed(path, classes, seed, salt, [])
    return [np.sort(h[labels == c])[:k] for c in range(_n_classes(classes))]


def merge_smallest(parts: list, k: int, n: int) -> list[np.ndarray]:
    return [np.sort(np.concatenate([p[c] for p in parts] or [np.zeros(0)]))[:k]
            for c in range(n)]


def rows_under(path: str, classes, seed: int, salt: str, cutoffs: list[float],
               columns: list[str]) -> list[list[tuple]]:
    """Pass 2 on one partition: (hash, id, *columns) of each class's rows under its cutoff."""
    docs, labels, h = _hashed(path, classes, seed, salt, columns)
    out = []
    for c, cutoff in enumerate(cutoffs):
        take = np.flatnonzero((labels == c) & (h <= cutoff))
        values = [docs[col].iloc[take].tolist() for col in ["id", *columns]]
        out.append(sorted(zip(h[take].tolist(), *values, strict=True)))
    return out


def merge_rows(parts: list, k: int, n: int) -> list[list[tuple]]:
    return [sorted(row for p in parts for row in p[c])[:k] for c in range(n)]


def _n_classes(classes) -> int:
    return 1 if classes is None else len(classes)


def bottom_k_rows(client, paths: list[Path | str], classes: list[list[str]] | None, seed: int,
                  salt: str, k: int, columns: list[str], desc: str = "sample"):
    """Per class, the (hash, id, *columns) of its k smallest-hash documents, in hash order.

    Returns a future of that list on the cluster (so a task can consume the sample without
    the driver holding it), or the list itself when `client` is None.
    """
    n, paths = _n_classes(classes), [str(p) for p in paths]
    smallest = result(client, map_reduce(client, smallest_hashes, paths,
                                         partial(merge_smallest, k=k, n=n), classes, seed, salt,
                                         k, desc=f"{desc}: hashes"))
    # A class with fewer than k documents takes them all; an empty one takes none.
    cutoffs = [float(h[k - 1]) if len(h) >= k else (np.inf if len(h) else -np.inf)
               for h in smallest]
    return map_reduce(client, rows_under, paths, partial(merge_rows, k=k, n=n), classes, seed,
                      salt, cutoffs, list(columns), desc=f"{desc}: rows")
