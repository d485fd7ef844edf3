"""Which copy survives deduplication: one rule for exact and fuzzy duplicates."""

from __future__ import annotations

import pandas as pd


def keeper_first(docs: pd.DataFrame, groups: list[str], priority: pd.Series) -> pd.DataFrame:
    """`docs` ordered group by group, each group's keeper first: the copy from the source
    with the highest priority, then the smallest id (a pure function of the documents, so
    the choice never depends on partitioning or worker count)."""
    ranked = docs.assign(_neg_priority=-priority.astype("int64"))
    ranked = ranked.sort_values([*groups, "_neg_priority", "id"], kind="stable")
    return ranked.drop(columns="_neg_priority")
