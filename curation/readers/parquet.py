"""Parquet records, streamed batch by batch (memory bounded by one row group).

A text column of the wrong type rejects each of its rows as `text_not_string` (and a
missing one as `missing_text`), exactly as the same records would be in JSONL, so every
row of the input is accounted for in the ledger. Positions are 0-based rows in the file.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.readers.records import ChunkBuilder


def _is_text_type(arrow_type: pa.DataType) -> bool:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or (
        pa.types.is_string_view(arrow_type)
    )


def _invalid_utf8_rows(text: pa.Array) -> np.ndarray:
    """Rows whose bytes are not UTF-8 (Parquet readers do not check this)."""
    try:
        text.validate(full=True)
        return np.zeros(len(text), dtype=bool)
    except pa.ArrowInvalid:
        raw = text.cast(pa.large_binary()).to_pylist()
        bad = np.zeros(len(text), dtype=bool)
        for i, value in enumerate(raw):
            if value is not None:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    bad[i] = True
        return bad


def _id_column(batch: pa.RecordBatch, id_field: str | None) -> tuple[list | None, np.ndarray]:
    """The id column as strings, and per row "" or why its id is unusable."""
    n = batch.num_rows
    if id_field is None:
        return None, np.full(n, "", dtype=object)
    if id_field not in batch.schema.names:
        return [None] * n, np.full(n, "missing_id", dtype=object)
    column = batch.column(id_field)
    if not (pa.types.is_integer(column.type) or _is_text_type(column.type)):
        return [None] * n, np.full(n, "bad_id", dtype=object)
    values = column.cast(pa.large_string()).to_pylist()
    return values, np.array(["missing_id" if v is None else "" for v in values], dtype=object)


def read_parquet(
    source, builder: ChunkBuilder, *, text_field: str, id_field: str | None, batch_rows: int
):
    """Yield (documents, ledger) chunks of one Parquet file (`source`: path or file object)."""
    parquet = pq.ParquetFile(source)
    names = parquet.schema_arrow.names
    meta_columns = [n for n in names if n != text_field and n != id_field]
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_rows):
        n = batch.num_rows
        reasons = np.full(n, "", dtype=object)
        if text_field not in names:
            reasons[:] = "missing_text"
        elif not _is_text_type(batch.schema.field(text_field).type):
            reasons[:] = "text_not_string"
        else:
            text = batch.column(text_field).cast(pa.large_string())
            empty = pc.fill_null(pc.equal(pc.binary_length(text), 0), False)
            nul = pc.fill_null(pc.match_substring(text, "\x00"), False)
            reasons[np.asarray(empty)] = "empty_text"
            reasons[np.asarray(nul)] = "nul_byte"
            reasons[_invalid_utf8_rows(text)] = "invalid_utf8"
            reasons[np.asarray(pc.is_null(text))] = "missing_text"
        ids, id_reasons = _id_column(batch, id_field)
        reasons = np.where(reasons == "", id_reasons, reasons)
        good = reasons == ""
        texts = []
        if good.any():
            kept_text = batch.column(text_field).filter(pa.array(good))
            texts = kept_text.cast(pa.large_string()).to_pylist()
        metas = batch.select(meta_columns).filter(pa.array(good)).to_pylist()
        good_iter = iter(zip(texts, metas, strict=True))
        for i in range(n):
            if good[i]:
                text_value, meta = next(good_iter)
                builder.add_document(
                    row, None if ids is None else ids[i], text_value,
                    json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str),
                )
            else:
                detail = {"field": text_field}
                if reasons[i] == "text_not_string":
                    detail["type"] = str(batch.schema.field(text_field).type)
                elif reasons[i] in ("missing_id", "bad_id"):
                    detail = {"field": id_field}
                builder.add_rejected(row, reasons[i], {"row": row}, **detail)
            row += 1
            if builder.full():
                yield builder.flush()
    if builder.pending():
        yield builder.flush()
