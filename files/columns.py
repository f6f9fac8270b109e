"""The columns of a staged file (a CSV header, NDJSON keys, a Parquet schema), checked
against a resource's fields.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from bulkflow.errors import InputError, first_line
from files.records import Oversized, record_blocks, split_records
from files.staging import StagedSource
from schemas.resource import Resource


def read_columns(staged: StagedSource, max_record: int) -> list[str]:
    """The columns a file declares: CSV header, Parquet schema, keys of the first NDJSON
    lines. A Parquet file is decoded through once here, so a corrupt one is refused before
    anything is written."""
    try:
        if staged.format == "csv":
            return csv_header(staged, max_record)[0]
        if staged.format == "parquet":
            return _parquet_columns(staged)
        return _ndjson_keys(staged.path, sample_lines=1000, max_record=max_record)
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read {staged.source} as {staged.declared_format}: {first_line(exc)}") from exc


def csv_header(staged: StagedSource, max_record: int) -> tuple[list[str], bytes]:
    """The header's column names, and what comes before the first record as written (the
    header, after Excel's `sep=` line if any, line ends included)."""
    dialect = staged.dialect
    with open(staged.path, "rb") as stream:
        first = next(record_blocks(stream, staged.size_bytes, quote=dialect.quote_byte, max_record=max_record), None)
    line = 1 + dialect.sep_line
    if isinstance(first, Oversized):
        raise InputError(
            f"{staged.source}: the header (line {line}) is over {max_record:,} bytes (BULKFLOW_MAX_RECORD_BYTES): "
            "is this really a CSV file with a header?"
        )
    records = split_records(first.data, 1, dialect.quote_byte) if first is not None else iter(())
    preamble = next(records, (1, b""))[1] if dialect.sep_line else b""
    _, record = next(records, (line, b""))
    if not record.strip():
        raise InputError(f"{staged.source} is empty: nothing to import")
    text = record.decode("utf-8").lstrip("\ufeff").removesuffix("\n").removesuffix("\r")
    try:
        names = dialect.fields(text)
    except csv.Error as exc:
        raise InputError(f"{staged.source}: the header (line {line}) is not valid CSV: {exc}") from None
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"{staged.source}: the header names {', '.join(map(repr, repeated))} more than once")
    return names, preamble + record


def _parquet_columns(staged: StagedSource) -> list[str]:
    parquet = pq.ParquetFile(staged.path)
    schema = parquet.schema_arrow
    for name in schema.names:
        kind = schema.field(name).type
        if pa.types.is_struct(kind) or pa.types.is_map(kind):
            raise InputError(
                f"{staged.source}: column {name} holds structs; bulkflow reads text, numbers, booleans, timestamps and lists"
            )
    for _ in parquet.iter_batches(batch_size=65_536):
        pass
    return list(schema.names)


def _ndjson_keys(path: Path, sample_lines: int, max_record: int) -> list[str]:
    """Union of the keys of the first lines that are JSON objects (malformed ones skipped)."""
    keys: dict[str, None] = {}
    with open(path, encoding="utf-8-sig") as fh:
        for _ in range(sample_lines):
            line = fh.readline(max_record + 1)
            if not line:
                break
            if len(line) > max_record:  # the reader rejects it; skip the rest, never holding it
                while line and not line.endswith("\n"):
                    line = fh.readline(max_record)
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict):
                keys.update(dict.fromkeys(record))
    return list(keys)


def check_columns(resource: Resource, source: str, columns: list[str]) -> list[str]:
    """The columns of `source` (as read, after the header match) the resource does not know
    (to ignore); InputError when a required column is missing."""
    missing = [c for c in resource.required_columns if c not in columns]
    if missing:
        raise InputError(
            f"{source} lacks required column(s) {', '.join(missing)} for {resource.name} "
            f"(found: {', '.join(columns) or 'none'}; expected: {', '.join(resource.field_names)})"
        )
    return [c for c in columns if c not in resource.field_names]
