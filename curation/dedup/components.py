"""Connected components of the verified duplicate graph, bounded in memory.

Every component is labelled by its smallest node. When the edges fit the configured
memory budget they are gathered into one worker process and labelled by scipy's sparse-graph
components; otherwise labels spread as Dask joins (min-label propagation with pointer
jumping) until no label changes, so no process ever holds more than a partition of edges.
Both paths give the same labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Bytes per gathered edge: two int64 columns, their pandas/scipy copies and the node index.
_BYTES_PER_EDGE = 16 * 6


def labels_in_memory(edges: pd.DataFrame) -> pd.DataFrame:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    lo, hi = edges["lo"].to_numpy(np.int64), edges["hi"].to_numpy(np.int64)
    nodes, index = np.unique(np.concatenate([lo, hi]), return_inverse=True)
    n = len(nodes)
    graph = coo_matrix((np.ones(len(lo), dtype=np.int8), (index[: len(lo)], index[len(lo):])),
                       shape=(n, n))
    _, component = connected_components(graph, directed=False)
    smallest = np.full(component.max(initial=-1) + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(smallest, component, nodes)  # once per node, not per hash
    return pd.DataFrame({"doc": nodes, "label": smallest[component]})


def _settled(collection):
    """Persist and wait, so the next round never builds on (or releases) unfinished work."""
    from distributed import wait

    persisted = collection.persist()
    wait(persisted)
    return persisted


def _labels_by_propagation(edges, max_rounds: int):
    import dask.dataframe as dd

    both = _settled(dd.concat([
        edges[["lo", "hi"]].rename(columns={"lo": "src", "hi": "dst"}),
        edges[["hi", "lo"]].rename(columns={"hi": "src", "lo": "dst"}),
    ]))
    nodes = both[["src"]].drop_duplicates().rename(columns={"src": "doc"})
    labels = _settled(nodes.assign(label=nodes["doc"]))
    for _ in range(max_rounds):
        from_neighbours = (
            both.merge(labels, left_on="src", right_on="doc")[["dst", "label"]]
            .groupby("dst").label.min().rename("neighbour").reset_index()
            .rename(columns={"dst": "doc"})
        )
        step = labels.merge(from_neighbours, on="doc", how="left")
        step = step.assign(hooked=step[["label", "neighbour"]].min(axis=1).astype("int64"))
        hooked = _settled(step[["doc", "label", "hooked"]])
        # Pointer jumping on the fresh labels: adopt the label of one's label, which
        # doubles how far a label travels per round (rounds ~ log of the diameter).
        of_hooked = hooked[["doc", "hooked"]].rename(columns={"doc": "hooked", "hooked": "jump"})
        step = hooked.merge(of_hooked, on="hooked", how="left")
        step = _settled(step.assign(new=step[["hooked", "jump"]].min(axis=1).astype("int64")))
        changed = int((step["new"] != step["label"]).sum().compute())
        labels = step[["doc", "new"]].rename(columns={"new": "label"})  # of a persisted frame
        if changed == 0:
            return labels
    raise RuntimeError(f"fuzzy_dedup: connected components did not settle in {max_rounds} rounds")


def connected_component_labels(edges, memory_budget_bytes: int, max_rounds: int = 10_000):
    """A Dask DataFrame (doc, label) for every node of the edge list (lo, hi).

    The label is the smallest doc key of the node's component.
    """
    import dask.dataframe as dd

    n_edges = int(edges.shape[0].compute())
    if n_edges == 0:
        empty = pd.DataFrame({"doc": np.empty(0, np.int64), "label": np.empty(0, np.int64)})
        return dd.from_pandas(empty, npartitions=1)
    if n_edges * _BYTES_PER_EDGE <= memory_budget_bytes:
        return _labels_on_one_worker(edges, max(1, edges.npartitions))
    return _labels_by_propagation(edges, max_rounds)


def _piece(labels: pd.DataFrame, k: int, n: int) -> pd.DataFrame:
    size = -(-len(labels) // n)
    return labels.iloc[k * size:(k + 1) * size]


def _labels_on_one_worker(edges, n: int):
    """The in-memory labelling in one worker process (the `curate` process never holds the
    edges), handed back as n partitions."""
    import dask.dataframe as dd
    from distributed import get_client

    client = get_client()
    labels = client.submit(labels_in_memory, client.compute(edges[["lo", "hi"]]), pure=False)
    meta = pd.DataFrame({"doc": np.empty(0, np.int64), "label": np.empty(0, np.int64)})
    return dd.from_delayed([client.submit(_piece, labels, k, n, pure=False) for k in range(n)],
                           meta=meta, verify_meta=False)
