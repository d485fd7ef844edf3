"""The two row contracts of curation: documents and ledger rows (see DESIGN.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa

DOCUMENT_COLUMNS = ["id", "source", "text", "meta"]
DOCUMENT_SCHEMA = pa.schema(
    [("id", pa.string()), ("source", pa.string()), ("text", pa.string()), ("meta", pa.string())]
)

LEDGER_COLUMNS = ["id", "source", "stage", "action", "reason", "detail"]
LEDGER_SCHEMA = pa.schema([(name, pa.string()) for name in LEDGER_COLUMNS])

REMOVED = "removed"
MODIFIED = "modified"


def empty_documents() -> pd.DataFrame:
    return DOCUMENT_SCHEMA.empty_table().to_pandas()


def empty_ledger() -> pd.DataFrame:
    return LEDGER_SCHEMA.empty_table().to_pandas()


def ledger_rows(
    docs: pd.DataFrame,
    stage: str,
    action: str,
    reason: str | Sequence[str],
    detail: dict | Sequence[dict] | None = None,
) -> pd.DataFrame:
    """Ledger rows for the documents in `docs` (one row each).

    `reason` and `detail` are either one value for all rows or one per row; `detail`
    dicts are stored as JSON strings so any Arrow tool can read the ledger.
    """
    n = len(docs)
    if action not in (REMOVED, MODIFIED):
        raise ValueError(f"ledger action must be {REMOVED!r} or {MODIFIED!r}, got {action!r}")
    reasons = [reason] * n if isinstance(reason, str) else list(reason)
    if detail is None or isinstance(detail, dict):
        text = json.dumps(detail or {}, sort_keys=True)
        details = [text] * n
    else:
        details = [json.dumps(d, sort_keys=True) for d in detail]
    if len(reasons) != n or len(details) != n:
        raise ValueError("ledger_rows: reason/detail lengths must match the documents")
    return pd.DataFrame(
        {
            "id": docs["id"].astype(str).to_numpy(),
            "source": docs["source"].astype(str).to_numpy(),
            "stage": [stage] * n,
            "action": [action] * n,
            "reason": reasons,
            "detail": details,
        },
        columns=LEDGER_COLUMNS,
    )
