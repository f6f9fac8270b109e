"""Readers: a staged file to fixed-size chunks of raw text rows, in bounded memory.

Files are read in 1 MB blocks cut at record boundaries (never memory-mapped whole), so memory
depends on the chunk size, not the file size. Every chunk has `_line` (the source line of
the record: physical line for CSV and NDJSON, element number for a JSON array, row number
for Parquet) and the resource's fields as text; NDJSON chunks also carry `_raw`, the line
as written. Chunk k always holds records k*size .. (k+1)*size-1, so a re-run cuts the file
exactly as the first run did.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
import pyarrow.parquet as pq

from bulkflow.errors import InputError
from schemas.resource import Resource
from tasks.source import StagedSource
from tasks.validate import IS_OBJECT, LINE, RAW_RECORD, format_text_list

BLOCK_BYTES = 1 << 20
"""Small blocks keep the parser's working set small; throughput is the same as with 8 MB."""
_LINE_SEPARATOR = "\x1f"  # cannot occur unescaped in valid JSON, so each line stays whole


@dataclass(frozen=True)
class Batch:
    """Records read from the file, and how far through the file they reach (0..1)."""

    rows: pl.DataFrame
    progress: float


def read_chunks(staged: StagedSource, resource: Resource, chunk_size: int) -> Iterator[Batch]:
    """Yield the file's records in chunks of exactly `chunk_size` rows (the last may be shorter)."""
    readers = {"csv": _csv_batches, "ndjson": _ndjson_batches, "parquet": _parquet_batches}
    try:
        yield from _exact_batches(readers[staged.format](staged, resource), chunk_size)
    except pl.exceptions.PolarsError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot read {staged.source} as {staged.declared_format}: {detail}") from exc


def record_blocks(staged: StagedSource, *, quoted: bool) -> Iterator[tuple[bytes, float]]:
    """Blocks of whole records: each ends on a newline outside quotes.

    In CSV a quote toggles the quoted state (an escaped `""` toggles twice), so a newline
    ends a record exactly when the quotes before it in the block are even in number.
    """
    total = max(staged.size_bytes, 1)
    done = 0
    carry = b""
    with open(staged.path, "rb") as fh:
        while data := fh.read(BLOCK_BYTES):
            block = carry + data
            cut = _last_record_end(block, quoted)
            if cut < 0:
                carry = block
                continue
            done += cut + 1
            yield block[: cut + 1], done / total
            carry = block[cut + 1 :]
    if carry.strip():
        yield carry, 1.0


def _last_record_end(block: bytes, quoted: bool) -> int:
    end = block.rfind(b"\n")
    while quoted and end >= 0 and block.count(b'"', 0, end) % 2:
        end = block.rfind(b"\n", 0, end)
    return end


def _first_record_end(block: bytes) -> int:
    end = block.find(b"\n")
    while end >= 0 and block.count(b'"', 0, end) % 2:
        end = block.find(b"\n", end + 1)
    return end


def _csv_batches(staged: StagedSource, resource: Resource) -> Iterator[Batch]:
    header = b""
    next_line = 2
    for block, progress in record_blocks(staged, quoted=True):
        if not header:
            end = _first_record_end(block)
            header, block = (block[: end + 1], block[end + 1 :]) if end >= 0 else (block + b"\n", b"")
            if not block.strip():
                continue
        batch = pl.read_csv(io.BytesIO(header + block), infer_schema=False)
        batch, next_line = _with_csv_lines(batch, resource, next_line)
        yield Batch(batch, progress)


def _with_csv_lines(batch: pl.DataFrame, resource: Resource, first_line: int) -> tuple[pl.DataFrame, int]:
    """Physical line numbers: quoted values may span lines, so count their line breaks."""
    breaks = pl.sum_horizontal([pl.col(c).str.count_matches("\n").fill_null(0) for c in batch.columns])
    spans = batch.select((breaks + 1).cast(pl.Int64)).to_series()
    starts = (spans.cum_sum() - spans + first_line).alias(LINE)
    columns = [c for c in resource.field_names if c in batch.columns]
    return batch.select(starts, *columns), first_line + int(spans.sum())


def _ndjson_batches(staged: StagedSource, resource: Resource) -> Iterator[Batch]:
    next_line = 1
    for block, progress in record_blocks(staged, quoted=False):
        lines = pl.read_csv(
            io.BytesIO(block),
            has_header=False,
            separator=_LINE_SEPARATOR,
            quote_char=None,
            new_columns=[RAW_RECORD],
            infer_schema=False,
            truncate_ragged_lines=True,
        ).with_row_index(LINE, offset=next_line)
        next_line += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
        lines = lines.filter(pl.col(RAW_RECORD).str.strip_chars().str.len_bytes() > 0)
        yield Batch(_ndjson_fields(lines, resource), progress)


def _ndjson_fields(lines: pl.DataFrame, resource: Resource) -> pl.DataFrame:
    """Each field's JSON value as text (strings unquoted, arrays as JSON); a line that is
    not a JSON object has all fields null and `_raw` kept, so the rules reject it."""
    line = pl.col(RAW_RECORD).str.strip_chars()
    is_object = line.str.starts_with("{") & line.str.json_path_match("$").is_not_null()
    fields = [
        pl.when(is_object).then(line.str.json_path_match(f"$.{name}")).alias(name)
        for name in resource.field_names
    ]
    return lines.select(pl.col(LINE).cast(pl.Int64), *fields, pl.col(RAW_RECORD), is_object.alias(IS_OBJECT))


def _parquet_batches(staged: StagedSource, resource: Resource) -> Iterator[Batch]:
    parquet = pq.ParquetFile(staged.path)
    total = max(parquet.metadata.num_rows, 1)
    columns = [c for c in resource.field_names if c in parquet.schema_arrow.names]
    next_row = 1
    for record_batch in parquet.iter_batches(batch_size=65_536, columns=columns):
        batch = pl.from_arrow(record_batch)
        assert isinstance(batch, pl.DataFrame)
        numbered = batch.with_columns(pl.int_range(next_row, next_row + batch.height, dtype=pl.Int64).alias(LINE))
        next_row += batch.height
        yield Batch(_parquet_as_text(numbered, resource), (next_row - 1) / total)


def _parquet_as_text(batch: pl.DataFrame, resource: Resource) -> pl.DataFrame:
    """Typed Parquet columns rendered as the text our parsers read back."""
    columns = []
    for name in resource.field_names:
        if name not in batch.columns:
            continue
        dtype = batch.schema[name]
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            zoned = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
            col = zoned.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        elif isinstance(dtype, (pl.List, pl.Array)):
            col = format_text_list(col)
        else:
            col = col.cast(pl.String)
        columns.append(col.alias(name))
    return batch.select(pl.col(LINE), *columns)


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
