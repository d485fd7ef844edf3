"""Collects a file's good records and rejected ones into bounded (documents, ledger) chunks."""

from __future__ import annotations

import json

import pandas as pd

from curation.documents import DOCUMENT_COLUMNS, LEDGER_COLUMNS, REMOVED

READ_STAGE = "read"


def default_id(source: str, file_key: str, row: int) -> str:
    """The id of a record without a usable id field: stable as long as the file is."""
    return f"{source}/{file_key}/{row}"


class ChunkBuilder:
    """Accumulates documents and ledger rows; `full()` says when a chunk should be yielded.

    A chunk is full at `chunk_rows` documents (or ledger rows), or once its text reaches
    `chunk_bytes`, so a file of huge records still comes out in bounded pieces.
    """

    def __init__(
        self, *, source: str, file_key: str, path: str, chunk_rows: int, chunk_bytes: int
    ):
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.source = source
        self.file_key = file_key
        self.path = path
        self.chunk_rows = chunk_rows
        self.chunk_bytes = chunk_bytes
        self._reset()

    def _reset(self) -> None:
        self.ids: list[str] = []
        self.rows: list[int] = []
        self.texts: list[str] = []
        self.metas: list[str] = []
        self.bad: list[tuple[str, str, str]] = []
        self.text_chars = 0

    def add_document(self, row: int, doc_id: str | None, text: str, meta: str) -> None:
        self.ids.append(default_id(self.source, self.file_key, row) if doc_id is None else doc_id)
        self.rows.append(row)
        self.texts.append(text)
        self.metas.append(meta)
        self.text_chars += len(text)

    def add_rejected(self, row: int, reason: str, position: dict, **detail) -> None:
        """A malformed record: one `removed` ledger row naming the file and position."""
        record = {"file": self.path, **position, **detail}
        doc_id = default_id(self.source, self.file_key, row)
        self.bad.append((doc_id, reason, json.dumps(record, sort_keys=True)))

    def full(self) -> bool:
        return (
            len(self.ids) >= self.chunk_rows
            or len(self.bad) >= self.chunk_rows
            or self.text_chars >= self.chunk_bytes
        )

    def pending(self) -> bool:
        return bool(self.ids or self.bad)

    def flush(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        n = len(self.ids)
        docs = pd.DataFrame(
            {"id": self.ids, "source": [self.source] * n, "text": self.texts, "meta": self.metas},
            columns=DOCUMENT_COLUMNS,
            dtype=str,
        )
        # The record's row in its file: where a duplicate id's first copy is reported.
        docs["row"] = pd.Series(self.rows, dtype="int64")
        m = len(self.bad)
        ledger = pd.DataFrame(
            {
                "id": [b[0] for b in self.bad],
                "source": [self.source] * m,
                "stage": [READ_STAGE] * m,
                "action": [REMOVED] * m,
                "reason": [b[1] for b in self.bad],
                "detail": [b[2] for b in self.bad],
            },
            columns=LEDGER_COLUMNS,
            dtype=str,
        )
        self._reset()
        return docs, ledger
