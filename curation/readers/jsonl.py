"""JSONL records from a (decompressed) byte stream, one malformed line never stopping the rest.

Lines are split on b"\\n" only. A line longer than the record limit is never held in
memory: once it passes the limit its bytes are counted and dropped until its newline.
Blank lines (only ASCII whitespace) are not records: they are skipped and take no record
index, so ids count records, while ledger positions are 1-based physical line numbers.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from curation.readers.records import ChunkBuilder

READ_BLOCK_BYTES = 1 << 20
# A JSON \\u escape of a UTF-16 surrogate: json.loads turns a lone one into a str that
# can never be written as UTF-8, so records matching this are checked precisely.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@dataclass
class Line:
    number: int  # 1-based physical line number
    data: bytes | None  # None when over the size limit (or cut short by a broken file)
    size: int  # bytes in the line, without its newline


class BrokenStream(Exception):
    """The compressed stream ended early or is corrupt after `line` complete lines."""

    def __init__(self, line: int, reason: str, error: BaseException):
        super().__init__(str(error))
        self.line = line
        self.reason = reason


def _decompression_errors() -> tuple[type[BaseException], ...]:
    import gzip

    from curation.io import zstd_module

    return (gzip.BadGzipFile, zlib.error, zstd_module().ZstdError)


def iter_lines(stream: BinaryIO, max_record_bytes: int) -> Iterator[Line]:
    """Every line of `stream` in bounded memory (about one read block plus one record)."""
    corrupt = _decompression_errors()
    pending: list[bytes] = []
    pending_size = 0
    number = 0
    # read1 hands back what one decompression step gave, so the records just before a
    # cut are delivered before the EOFError (read(n) would raise and lose them).
    read = getattr(stream, "read1", stream.read)
    while True:
        try:
            block = read(READ_BLOCK_BYTES)
        except EOFError as err:
            raise BrokenStream(number + 1, "truncated_file", err) from err
        except corrupt as err:
            raise BrokenStream(number + 1, "corrupt_file", err) from err
        if not block:
            break
        pieces = block.split(b"\n")
        for piece in pieces[:-1]:
            number += 1
            size = pending_size + len(piece)
            if size > max_record_bytes:
                yield Line(number, None, size)
            else:
                yield Line(number, b"".join([*pending, piece]) if pending else piece, size)
            pending, pending_size = [], 0
        tail = pieces[-1]
        pending_size += len(tail)
        if pending_size > max_record_bytes:
            pending = []  # too long: keep counting, stop holding
        elif tail:
            pending.append(tail)
    if pending_size:
        number += 1
        yield Line(number, b"".join(pending) if pending_size <= max_record_bytes else None,
                   pending_size)


def _parse(line: bytes, text_field: str, id_field: str | None):
    """(text, meta, id) for a good record, else (reason, detail) of why it is rejected."""
    if b"\x00" in line:
        return "nul_byte", {"offset": line.index(b"\x00")}
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as err:
        return "invalid_utf8", {"offset": err.start}
    try:
        record = json.loads(decoded)
    except RecursionError:
        return "bad_json", {"error": "nested too deeply"}
    except ValueError as err:
        return "bad_json", {"error": str(err)}
    if not isinstance(record, dict):
        return "not_an_object", {"type": type(record).__name__}
    text = record.get(text_field)
    if text is None:
        return "missing_text", {"field": text_field}
    if not isinstance(text, str):
        return "text_not_string", {"field": text_field, "type": type(text).__name__}
    if "\x00" in text:
        return "nul_byte", {"field": text_field}
    doc_id = None
    if id_field is not None:
        value = record.get(id_field)
        if value is None:
            return "missing_id", {"field": id_field}
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return "bad_id", {"field": id_field, "type": type(value).__name__}
        doc_id = str(value)
    if text == "":
        return "empty_text", {"field": text_field}
    others = {k: v for k, v in record.items() if k != text_field and k != id_field}
    try:
        meta = json.dumps(others, sort_keys=True, ensure_ascii=False)
    except RecursionError:
        return "bad_json", {"error": "nested too deeply"}
    if _SURROGATE_ESCAPE.search(decoded):
        try:
            text.encode("utf-8")
            meta.encode("utf-8")
            if doc_id is not None:
                doc_id.encode("utf-8")
        except UnicodeEncodeError:
            return "invalid_utf8", {"error": "lone surrogate escape"}
    return text, meta, doc_id


def read_jsonl(
    stream: BinaryIO,
    builder: ChunkBuilder,
    *,
    text_field: str,
    id_field: str | None,
    max_record_bytes: int,
):
    """Yield (documents, ledger) chunks of one JSONL stream (see the module docstring)."""
    row = 0
    try:
        for line in iter_lines(stream, max_record_bytes):
            position = {"line": line.number}
            if line.data is None:
                builder.add_rejected(
                    row, "record_too_large", position, bytes=line.size, limit=max_record_bytes
                )
            elif not line.data.strip():
                continue
            else:
                parsed = _parse(line.data, text_field, id_field)
                if len(parsed) == 2:
                    builder.add_rejected(row, parsed[0], position, **parsed[1])
                else:
                    text, meta, doc_id = parsed
                    builder.add_document(row, doc_id, text, meta)
            row += 1
            if builder.full():
                yield builder.flush()
    except BrokenStream as broken:
        builder.add_rejected(row, broken.reason, {"line": broken.line}, error=str(broken))
    if builder.pending():
        yield builder.flush()
