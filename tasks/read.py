"""Readers: a staged file to fixed-size chunks of raw text rows, in bounded memory.

Every chunk has `_line` (the source line of the record: physical line for CSV and NDJSON,
element number for a JSON array, row number for Parquet) and the resource's fields as
text. NDJSON chunks also carry `_raw`, the line as written. Chunk k always holds records
k*size .. (k+1)*size-1, so a re-run cuts the file exactly as the first run did.
"""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl

from bulkflow.errors import InputError
from schemas.resource import Resource
from tasks.source import StagedSource
from tasks.validate import IS_OBJECT, LINE, RAW_RECORD

_LINE_SEPARATOR = "\x1f"  # cannot occur unescaped in valid JSON, so each line stays whole


def count_records(staged: StagedSource) -> int:
    """How many records the file holds (one cheap streaming pass)."""
    return _guarded(staged, lambda: _scan(staged).select(pl.len()).collect().item())


def read_chunks(staged: StagedSource, resource: Resource, chunk_size: int) -> Iterator[pl.DataFrame]:
    """Yield the file's records as chunks of exactly `chunk_size` rows (the last may be shorter)."""
    to_text = _TO_TEXT[staged.format]
    first_line = 2 if staged.format == "csv" else 1
    for batch in _exact_batches(_guarded_iter(staged, _scan(staged), chunk_size), chunk_size):
        chunk = to_text(batch, resource)
        if staged.format == "csv":
            chunk, first_line = _with_csv_lines(chunk, batch, first_line)
        yield chunk


def _scan(staged: StagedSource) -> pl.LazyFrame:
    if staged.format == "csv":
        return pl.scan_csv(staged.path, infer_schema=False, row_index_name=LINE)
    if staged.format == "parquet":
        return pl.scan_parquet(staged.path, row_index_name=LINE, row_index_offset=1)
    lines = pl.scan_csv(
        staged.path,
        has_header=False,
        separator=_LINE_SEPARATOR,
        quote_char=None,
        new_columns=[RAW_RECORD],
        infer_schema=False,
        truncate_ragged_lines=True,
        row_index_name=LINE,
        row_index_offset=1,
    )
    return lines.filter(pl.col(RAW_RECORD).str.strip_chars().str.len_bytes() > 0)


def _csv_to_text(batch: pl.DataFrame, resource: Resource) -> pl.DataFrame:
    columns = [c for c in resource.field_names if c in batch.columns]
    return batch.select(LINE, *columns)


def _with_csv_lines(chunk: pl.DataFrame, batch: pl.DataFrame, first_line: int) -> tuple[pl.DataFrame, int]:
    """Physical line numbers: quoted values may span lines, so count their line breaks."""
    values = [c for c in batch.columns if c != LINE]
    breaks = pl.sum_horizontal([pl.col(c).str.count_matches("\n").fill_null(0) for c in values])
    spans = batch.select((breaks + 1).cast(pl.Int64).alias("span")).to_series()
    starts = spans.cum_sum() - spans + first_line
    next_line = first_line + int(spans.sum())
    return chunk.with_columns(starts.alias(LINE)), next_line


def _ndjson_to_text(batch: pl.DataFrame, resource: Resource) -> pl.DataFrame:
    """Each field's JSON value as text (strings unquoted, arrays as JSON); a line that is
    not a JSON object has all fields null and `_raw` kept, so the rules reject it."""
    line = pl.col(RAW_RECORD).str.strip_chars()
    is_object = line.str.starts_with("{") & line.str.json_path_match("$").is_not_null()
    fields = [
        pl.when(is_object).then(line.str.json_path_match(f"$.{name}")).alias(name)
        for name in resource.field_names
    ]
    return batch.select(pl.col(LINE).cast(pl.Int64), *fields, pl.col(RAW_RECORD), is_object.alias(IS_OBJECT))


def _parquet_to_text(batch: pl.DataFrame, resource: Resource) -> pl.DataFrame:
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
            col = pl.struct(col.cast(pl.List(pl.String)).alias("v")).struct.json_encode().str.slice(5).str.strip_suffix("}")
            col = pl.when(pl.col(name).is_not_null()).then(col)
        elif dtype == pl.Boolean:
            col = col.cast(pl.String)
        elif dtype != pl.String:
            col = col.cast(pl.String)
        columns.append(col.alias(name))
    return batch.select(pl.col(LINE).cast(pl.Int64), *columns)


_TO_TEXT = {"csv": _csv_to_text, "ndjson": _ndjson_to_text, "parquet": _parquet_to_text}


def _exact_batches(batches: Iterator[pl.DataFrame], size: int) -> Iterator[pl.DataFrame]:
    """Re-cut batches of any size into batches of exactly `size` rows."""
    pending: list[pl.DataFrame] = []
    held = 0
    for batch in batches:
        pending.append(batch)
        held += batch.height
        while held >= size:
            joined = pl.concat(pending, rechunk=False)
            yield joined.head(size)
            rest = joined.slice(size)
            pending, held = ([rest] if rest.height else []), rest.height
    if held:
        yield pl.concat(pending)


def _guarded_iter(staged: StagedSource, frame: pl.LazyFrame, chunk_size: int) -> Iterator[pl.DataFrame]:
    try:
        yield from frame.collect_batches(chunk_size=chunk_size)
    except pl.exceptions.PolarsError as exc:
        raise _input_error(staged, exc) from exc


def _guarded(staged: StagedSource, action):  # type: ignore[no-untyped-def]
    try:
        return action()
    except pl.exceptions.PolarsError as exc:
        raise _input_error(staged, exc) from exc


def _input_error(staged: StagedSource, exc: BaseException) -> InputError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InputError(f"cannot read {staged.source} as {staged.declared_format}: {detail}")
