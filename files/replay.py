"""Rejected records written back as a source file: the format they came in, with its
header, for the partner to fix and resend (`bulkflow rejects JOB --as-source`) or for a
new import of them (`--rejects-of JOB`).

A reject keeps its record as read (`raw`): the line itself for NDJSON, the element for a
JSON array, the fields as a JSON object of texts for CSV and Parquet (a record no reader
could split, such as a ragged CSV line, as its text). Batches come in file order, one
record per rejected line; memory is bounded by a batch.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import polars as pl
import pyarrow.parquet as pq

from decisions.rules import RAW_EXCERPT
from schemas.parameters import Format


@dataclass
class Replayed:
    records: int = 0
    cut_short: int = 0
    """Records the reject report quotes cut short (over `RAW_EXCERPT` characters): left
    out, since a cut record would be another record."""


def write_records(raws: Iterable[Sequence[str | None]], format: Format, fields: list[str], sink: IO[bytes]) -> Replayed:
    """Write the records of `raws` (batches of `raw` texts, in file order) to `sink` as `format`."""
    counts = Replayed()
    writer: pq.ParquetWriter | None = None
    for number, batch in enumerate(raws):
        kept = [raw for raw in batch if raw is not None and not _cut_short(raw)]
        counts.cut_short += len(batch) - len(kept)
        counts.records += len(kept)
        if format in ("ndjson", "json"):
            _write_texts(kept, format, sink, first=number == 0)
            continue
        frame = _frame(kept, fields)
        if format == "csv":
            buffer = io.BytesIO()
            frame.write_csv(buffer, include_header=number == 0)
            sink.write(buffer.getvalue())
        else:
            table = frame.to_arrow()
            writer = writer or pq.ParquetWriter(sink, table.schema)
            writer.write_table(table)
    if format == "json":
        sink.write(b"[\n]\n" if counts.records == 0 else b"\n]\n")
    if writer is not None:
        writer.close()
    elif format == "parquet":
        pq.write_table(_frame([], fields).to_arrow(), sink)
    elif format == "csv" and counts.records == 0:
        sink.write((",".join(fields) + "\n").encode())
    return counts


def _cut_short(raw: str) -> bool:
    return len(raw) > RAW_EXCERPT


def _write_texts(texts: list[str], format: Format, sink: IO[bytes], *, first: bool) -> None:
    if format == "ndjson":
        sink.writelines(text.rstrip("\r\n").encode() + b"\n" for text in texts)
        return
    for index, text in enumerate(texts):
        opening = b"[\n" if first and index == 0 else b",\n"
        sink.write(opening + text.strip().encode())


def _frame(raws: list[str], fields: list[str]) -> pl.DataFrame:
    """One row per record, every field as text (what CSV and Parquet sources hold)."""
    rows = [_fields_of(raw, fields) for raw in raws]
    return pl.DataFrame(rows, schema={name: pl.String for name in fields}, orient="row")


def _fields_of(raw: str, fields: list[str]) -> list[str | None]:
    """The record's field values as text; a record that is not a JSON object (no reader
    could split it) keeps its text in the first field, for the partner to see."""
    try:
        parsed: Any = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        return [raw, *([None] * (len(fields) - 1))]
    return [_text(parsed.get(name)) for name in fields]


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)
