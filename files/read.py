"""Readers: a staged file to fixed-size chunks of raw text rows, in bounded memory.

Files are read in blocks of whole records (`files/records.py`), never memory-mapped whole,
so memory depends on the chunk size and the maximum record size, not the file size. Every
chunk has `_line` (the source line of the record: physical line for CSV and NDJSON,
element number for a JSON array, row number for Parquet) and the resource's fields as
text. A record that cannot be read (a CSV row with the wrong number of fields or broken
quoting, an NDJSON line that is not a JSON object, a record over the size limit) is a row
too, with `_raw` (its text, cut short) and `_read_rule`/`_read_message` saying why: it
becomes one reject, and the other records go on. NDJSON chunks carry `_raw` for every row.
Chunk k always holds records k*size .. (k+1)*size-1, so a re-run cuts the file exactly as
the first run did.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import polars as pl
import pyarrow.parquet as pq

from bulkflow.errors import InputError, first_line
from files.batches import Batch, ChunkSpan, TextSpan
from files.columns import csv_header
from files.dialect import CsvDialect
from files.header import ColumnMatch
from files.parquet import parquet_batches, parquet_span
from files.records import (
    EXCERPT_BYTES,
    Block,
    Oversized,
    Readable,
    csv_record_starts,
    occurrences,
    split_records,
)
from files.remote import is_http, is_remote
from files.staging import StagedSource
from schemas.columns import LINE, RAW_RECORD, READ_MESSAGE, READ_RULE
from schemas.parameters import Format
from schemas.resource import INVALID_TYPE, Resource, ValueFormats

DEFAULT_MAX_RECORD_BYTES = 16 << 20


_UNSURE_JSON_VALUE = r"^[\[{]|^-?\d+(?:\.\d*)?[eE]|^-?\d+\.\d"
"""Values json_path_match renders ambiguously: an object or array (or a string that looks
like one), and numbers it may have rounded through a float (`1e400`, 20+ digit integers
come back in exponent form). Such lines are read again exactly, in Python."""


def read_chunks(
    staged: StagedSource, resource: Resource, chunk_size: int, max_record: int = DEFAULT_MAX_RECORD_BYTES
) -> Iterator[Batch]:
    """Yield the file's records in chunks of exactly `chunk_size` rows (the last may be shorter)."""
    readers = {"csv": _csv_batches, "ndjson": _ndjson_batches, "parquet": _parquet_batches}
    with _as_input_error(staged.source, staged.declared_format):
        yield from _exact_batches(readers[staged.format](staged, resource, max_record), chunk_size)


@dataclass(frozen=True)
class CsvLayout:
    """What reading a CSV file's records needs: its dialect, the names its columns are
    read under (their fields), and the bytes before its first record (the header)."""

    dialect: CsvDialect
    names: tuple[str, ...]
    header: bytes

    @classmethod
    def of(cls, staged: StagedSource, max_record: int) -> CsvLayout:
        names, header = csv_header(staged, max_record)
        return cls(staged.dialect, tuple(staged.columns.read_as(names)), header)


@dataclass(frozen=True)
class SharedFile:
    """A staged file as a worker reaches it: where the same bytes are, and what reading
    one span of it alone needs."""

    source: str
    location: str
    """A path or fsspec URL holding the staged file's bytes."""
    format: Format
    declared_format: Format
    columns: ColumnMatch = ColumnMatch()
    csv: CsvLayout | None = None
    values: ValueFormats = ValueFormats()


def shared_file(staged: StagedSource, max_record: int) -> SharedFile:
    """How workers read `staged`: at the source itself when the staged bytes are the
    source's (a local file read in place, an object store copied as is), else at the
    staged copy, which must then be on storage the workers share."""
    from_store = staged.verbatim and is_remote(staged.source) and not is_http(staged.source)
    location = staged.source if from_store else str(staged.path.resolve())
    layout = CsvLayout.of(staged, max_record) if staged.format == "csv" else None
    return SharedFile(
        staged.source, location, staged.format, staged.declared_format, staged.columns, layout, staged.values
    )


def read_span(stream: Seekable, file: SharedFile, resource: Resource, span: ChunkSpan, max_record: int) -> pl.DataFrame:
    """The rows of one chunk, from `stream` (the file at `file.location`, opened): the same
    rows, lines and values as `read_chunks` gives for that chunk."""
    with _as_input_error(file.source, file.declared_format):
        if file.format == "parquet":
            batches = parquet_span(pq.ParquetFile(stream), resource, file.columns, span)
        else:
            stream.seek(span.start)
            text = TextSpan(_Window(stream, span.end - span.start), span.end - span.start, span.first_line)
            if file.csv is not None:
                batches = _csv_span(text, file.csv, resource, max_record)
            else:
                batches = _ndjson_span(text, resource, file.columns, max_record)
        chunks = [batch.rows for batch in _exact_batches(batches, span.rows)]
    if len(chunks) != 1 or chunks[0].height != span.rows:
        raise InputError(
            f"{file.source} changed while it was being imported: chunk {span.index} no longer holds "
            f"{span.rows} rows at {file.location}"
        )
    return chunks[0]


@contextmanager
def _as_input_error(source: str, declared_format: str) -> Iterator[None]:
    try:
        yield
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read {source} as {declared_format}: {first_line(exc, limit=200)}") from exc


class Seekable(Readable, Protocol):
    def seek(self, offset: int, whence: int = 0, /) -> int: ...


class _Window:
    """The next `size` bytes of a stream, and no more."""

    def __init__(self, stream: Readable, size: int) -> None:
        self.stream, self.left = stream, size

    def read(self, size: int = -1, /) -> bytes:
        data = self.stream.read(self.left if size < 0 else min(size, self.left))
        self.left -= len(data)
        return data


def _unreadable(line: int, raw: str, rule: str, message: str) -> dict[str, object]:
    return {LINE: line, RAW_RECORD: raw, READ_RULE: rule, READ_MESSAGE: message}


def _oversized(record: Oversized, max_record: int) -> dict[str, object]:
    head = record.head.decode("utf-8", errors="replace")
    message = f"the record is {record.size:,} bytes, over the {max_record:,} byte limit (BULKFLOW_MAX_RECORD_BYTES)"
    return _unreadable(record.line, head + "…", "record_too_large", message)


def _unreadable_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    schema = {LINE: pl.Int64, RAW_RECORD: pl.String, READ_RULE: pl.String, READ_MESSAGE: pl.String}
    return pl.DataFrame(rows, schema=schema)


def _csv_batches(staged: StagedSource, resource: Resource, max_record: int) -> Iterator[Batch]:
    layout = CsvLayout.of(staged, max_record)
    with open(staged.path, "rb") as stream:
        yield from _csv_span(TextSpan(stream, staged.size_bytes, 1), layout, resource, max_record)


def _csv_span(span: TextSpan, layout: CsvLayout, resource: Resource, max_record: int) -> Iterator[Batch]:
    for item in span.record_blocks(quote=layout.dialect.quote_byte, max_record=max_record):
        if isinstance(item, Oversized):
            yield Batch(_unreadable_frame([_oversized(item, max_record)]), item.progress)
            continue
        data, first_line = item.data, item.first_line
        if first_line == 1:
            data, first_line = data[len(layout.header) :], 1 + layout.header.count(b"\n")
        if data.strip(b"\r\n"):
            yield Batch(_csv_block(data, first_line, layout, resource), item.progress)


def _csv_block(data: bytes, first_line: int, layout: CsvLayout, resource: Resource) -> pl.DataFrame:
    """Parse a block of whole records. Polars reads it in one go; the fast read stands when
    it found the block's records (as `split_records` cuts them: a blank line is none) and
    the count of delimiters outside quotes proves every record had exactly the header's
    fields (polars pads short rows silently). Otherwise the block is read record by record."""
    dialect, names = layout.dialect, list(layout.names)
    try:
        batch = pl.read_csv(
            io.BytesIO(data),
            has_header=False,
            new_columns=names,
            separator=dialect.delimiter,
            quote_char=dialect.quote,
            infer_schema=False,
        )
    except pl.exceptions.PolarsError:
        return _csv_records(data, first_line, layout, resource)
    if batch.height != len(csv_record_starts(data, dialect.quote_byte)) or batch.width != len(names):
        return _csv_records(data, first_line, layout, resource)
    # Only a quoted value holds a delimiter or a line break: a block without a quote has none
    # to look for (the two scans of every value took about half of the block's reading).
    quoted = dialect.quote_byte in data
    in_values = int(batch.select(_occurrences_in_values(batch, dialect.delimiter).sum()).item() or 0) if quoted else 0
    if occurrences(data, dialect.delimiter.encode()) - in_values != batch.height * (len(names) - 1):
        return _csv_records(data, first_line, layout, resource)
    return _with_csv_lines(batch, resource, first_line, values_may_break=quoted)


def _occurrences_in_values(batch: pl.DataFrame, text: str) -> pl.Expr:
    """Each row's count of `text` in its values."""
    return pl.sum_horizontal([pl.col(c).str.count_matches(text, literal=True).fill_null(0) for c in batch.columns])


def _with_csv_lines(batch: pl.DataFrame, resource: Resource, first_line: int, values_may_break: bool) -> pl.DataFrame:
    """Physical line numbers: quoted values may span lines, so count their line breaks
    (unless no value `values_may_break`: then each record is one line)."""
    if values_may_break:
        spans = batch.select((_occurrences_in_values(batch, "\n") + 1).cast(pl.Int64)).to_series()
        starts = (spans.cum_sum() - spans + first_line).alias(LINE)
    else:
        starts = pl.int_range(first_line, first_line + batch.height, dtype=pl.Int64, eager=True).alias(LINE)
    columns = [c for c in resource.field_names if c in batch.columns]
    return batch.select(starts, *columns)


def _csv_records(data: bytes, first_line: int, layout: CsvLayout, resource: Resource) -> pl.DataFrame:
    """The careful path: each record parsed alone, strictly; a blank line is skipped, a
    record with the wrong number of fields or broken quoting becomes an unreadable row."""
    names = layout.names
    wanted = [(i, n) for i, n in enumerate(names) if n in resource.field_names]
    good: list[dict[str, object]] = []
    bad: list[dict[str, object]] = []
    for line, record in split_records(data, first_line, layout.dialect.quote_byte):
        text = record.decode("utf-8").removesuffix("\n").removesuffix("\r")
        if not text:
            continue
        try:
            fields = layout.dialect.fields(text)
        except csv.Error as exc:
            bad.append(_unreadable(line, text[:EXCERPT_BYTES], "malformed_record", f"broken CSV quoting: {exc}"))
            continue
        if len(fields) != len(names):
            message = f"the record has {len(fields)} fields, the header has {len(names)}"
            bad.append(_unreadable(line, text[:EXCERPT_BYTES], "malformed_record", message))
            continue
        good.append({LINE: line, **{name: fields[i] or None for i, name in wanted}})
    schema = {LINE: pl.Int64, **{name: pl.String for _, name in wanted}}
    return pl.concat([pl.DataFrame(good, schema=schema), _unreadable_frame(bad)], how="diagonal").sort(LINE)


def _parquet_batches(staged: StagedSource, resource: Resource, max_record: int) -> Iterator[Batch]:
    return parquet_batches(staged, resource, staged.columns)


def _ndjson_batches(staged: StagedSource, resource: Resource, max_record: int) -> Iterator[Batch]:
    with open(staged.path, "rb") as stream:
        yield from _ndjson_span(TextSpan(stream, staged.size_bytes, 1), resource, staged.columns, max_record)


def _ndjson_span(span: TextSpan, resource: Resource, columns: ColumnMatch, max_record: int) -> Iterator[Batch]:
    for item in span.record_blocks(quote=None, max_record=max_record):
        if isinstance(item, Oversized):
            yield Batch(_unreadable_frame([_oversized(item, max_record)]), item.progress)
            continue
        lines = ndjson_lines(item).filter(IS_NDJSON_ROW)
        if lines.height:
            yield Batch(_ndjson_fields(lines, resource, columns), item.progress)


IS_NDJSON_ROW = pl.col(RAW_RECORD).str.strip_chars().str.len_bytes() > 0
"""A line that is a row: one with more than blanks (blank lines are skipped)."""


def ndjson_lines(block: Block) -> pl.DataFrame:
    """Every line of a block (the file's byte order mark dropped), with its `_line`."""
    text = block.data.decode("utf-8")
    return (
        pl.Series(RAW_RECORD, [text.removeprefix("\ufeff") if block.first_line == 1 else text])
        .str.split("\n")
        .explode()
        .to_frame()
        .with_row_index(LINE, offset=block.first_line)
    )


def _ndjson_fields(lines: pl.DataFrame, resource: Resource, columns: ColumnMatch) -> pl.DataFrame:
    """Each field's JSON value as text (strings unquoted, arrays as JSON); a line that is
    not a JSON object is unreadable, with `_raw` kept. Values polars may render wrongly are
    read again exactly (`_exact_values`)."""
    line = pl.col(RAW_RECORD).str.strip_chars()
    is_object = line.str.starts_with("{") & line.str.json_path_match("$").is_not_null()
    fields = [
        pl.when(is_object).then(line.str.json_path_match(_json_path(columns.column_of(name)))).alias(name)
        for name in resource.field_names
    ]
    read = lines.select(
        pl.col(LINE).cast(pl.Int64),
        *fields,
        pl.col(RAW_RECORD),
        pl.when(~is_object).then(pl.lit("malformed_record")).alias(READ_RULE),
        pl.when(~is_object).then(pl.lit("the line is not a JSON object (or is nested too deeply)")).alias(READ_MESSAGE),
        pl.lit(None, pl.String).alias(INVALID_TYPE),
    )
    single = [f.name for f in resource.fields if f.kind != "text_list"]
    texts = [f.name for f in resource.fields if f.kind == "text"]
    unsure = pl.any_horizontal(
        [pl.col(n).str.contains(_UNSURE_JSON_VALUE) for n in single]
        + [pl.col(n).is_in(["true", "false"]) for n in texts]  # maybe a JSON boolean where text is due
    ).fill_null(False)
    if not read.select(unsure.any()).item():
        return read
    exact = _exact_values(read.filter(unsure), resource, columns)
    return pl.concat([read.filter(~unsure), exact]).sort(LINE)


def _json_path(key: str) -> str:
    """The JSONPath of a top-level key."""
    if key.isidentifier():
        return f"$.{key}"
    return f"$['{key}']" if "'" not in key else f'$["{key}"]'


def _exact_values(rows: pl.DataFrame, resource: Resource, columns: ColumnMatch) -> pl.DataFrame:
    """Read lines again with Python's json, numbers kept as written: objects and arrays
    where one value is expected, and booleans where a text is, are named in `_invalid_type`."""
    records = []
    for row in rows.iter_rows(named=True):
        try:
            record = json.loads(row[RAW_RECORD], parse_int=str, parse_float=str, parse_constant=str)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            records.append({**row, READ_RULE: "malformed_record", READ_MESSAGE: "the line is not a JSON object"})
            continue
        wrong = []
        for f in resource.fields:
            value = record.get(columns.column_of(f.name))
            if (isinstance(value, (dict, list)) and f.kind != "text_list") or (
                isinstance(value, bool) and f.kind == "text"
            ):
                wrong.append(f.name)
            row[f.name] = _as_text(value)
        records.append({**row, INVALID_TYPE: ",".join(wrong) or None})
    return pl.DataFrame(records, schema=rows.schema)


def _as_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


def _exact_batches(batches: Iterator[Batch], size: int) -> Iterator[Batch]:
    """Re-cut batches of any size into batches of exactly `size` rows."""
    pending: list[pl.DataFrame] = []
    held = 0
    progress = 0.0
    for batch in batches:
        pending.append(batch.rows)
        held += batch.rows.height
        progress = batch.progress
        while held >= size:
            joined = pl.concat(pending, how="diagonal_relaxed", rechunk=False)
            rest = joined.slice(size)
            pending, held = ([rest] if rest.height else []), rest.height
            yield Batch(joined.head(size), progress)
    if held:
        yield Batch(pl.concat(pending, how="diagonal_relaxed"), 1.0)
