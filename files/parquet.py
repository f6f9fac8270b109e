"""Parquet read as text rows (`RowsRead`), the whole file in batches or one chunk's rows,
reading only the row groups they are in.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from decisions.parsers import format_text_list
from files.batches import Batch, ChunkSpan
from files.header import ColumnMatch
from files.staging import StagedSource
from schemas.columns import LINE
from schemas.resource import Resource


def parquet_batches(staged: StagedSource, resource: Resource, match: ColumnMatch) -> Iterator[Batch]:
    parquet = pq.ParquetFile(staged.path)
    total = max(parquet.metadata.num_rows, 1)
    columns = _wanted(parquet, resource, match)
    next_row = 1
    for record_batch in parquet.iter_batches(batch_size=65_536, columns=columns):
        batch = _numbered(record_batch, next_row).rename(match.renames, strict=False)
        next_row += batch.height
        yield Batch(_parquet_as_text(batch, resource), (next_row - 1) / total)


def parquet_span(parquet: pq.ParquetFile, resource: Resource, match: ColumnMatch, span: ChunkSpan) -> Iterator[Batch]:
    """Rows [span.start, span.end) of a Parquet file, reading only the row groups they are in."""
    columns = _wanted(parquet, resource, match)
    groups, first_row, group_start = [], 0, None
    for group in range(parquet.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if first_row < span.end and first_row + rows > span.start:
            groups.append(group)
            group_start = first_row if group_start is None else group_start
        first_row += rows
    table = parquet.read_row_groups(groups, columns=columns).slice(span.start - (group_start or 0), span.rows)
    batch = _numbered(table, span.start + 1).rename(match.renames, strict=False)
    yield Batch(_parquet_as_text(batch, resource), span.progress)


def _wanted(parquet: pq.ParquetFile, resource: Resource, match: ColumnMatch) -> list[str]:
    """The file's columns that feed a field."""
    return [c for c in parquet.schema_arrow.names if match.renames.get(c, c) in resource.field_names]


def _numbered(table: pa.RecordBatch | pa.Table, first_row: int) -> pl.DataFrame:
    """Arrow rows as a frame, with `_line` the row numbers from `first_row` on."""
    batch = pl.from_arrow(table)
    assert isinstance(batch, pl.DataFrame)
    return batch.with_columns(pl.int_range(first_row, first_row + batch.height, dtype=pl.Int64).alias(LINE))


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
