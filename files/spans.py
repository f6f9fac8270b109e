"""Chunk spans: where each chunk of a staged file lies, so a worker can read it alone.

Chunk k holds rows k*size .. (k+1)*size-1, exactly as `read.read_chunks` cuts the file
(a re-run, whichever task runner, cuts the same chunks and the job ledger stays valid).
Planning finds where those rows start without parsing a field: for CSV the newlines outside
quotes (`records.csv_record_starts`), for NDJSON the lines with more than blanks, for
Parquet row numbers. It reads the file once, in blocks, in bounded memory; what it yields
is a few numbers per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from files.batches import ChunkSpan
from files.dialect import CsvDialect
from files.read import IS_NDJSON_ROW, ndjson_lines
from files.records import Block, Oversized, csv_record_starts, record_blocks
from files.staging import StagedSource
from schemas.columns import LINE, RAW_RECORD


def plan_spans(staged: StagedSource, chunk_size: int, max_record: int) -> Iterator[ChunkSpan]:
    """The file's chunks of `chunk_size` rows, in order."""
    if staged.format == "parquet":
        yield from _row_spans(pq.ParquetFile(staged.path).metadata.num_rows, chunk_size)
        return
    total = max(staged.size_bytes, 1)
    cut = _Cutter(chunk_size)
    offset = 0
    with open(staged.path, "rb") as stream:
        quote = staged.dialect.quote_byte if staged.format == "csv" else None
        items = record_blocks(stream, staged.size_bytes, quote=quote, max_record=max_record)
        for item in items:
            if isinstance(item, Oversized):  # one row: the reader reports it as record_too_large
                yield from cut.rows(np.array([offset]), np.array([item.line]), total)
                offset += item.size
                continue
            starts, lines = _row_starts(item, staged.dialect if staged.format == "csv" else None)
            yield from cut.rows(starts + offset, lines, total)
            offset += len(item.data)
    yield from cut.last(staged.size_bytes)


def _row_starts(block: Block, csv: CsvDialect | None) -> tuple[np.ndarray, np.ndarray]:
    """Offsets in the block and physical lines of its rows."""
    if csv is None:
        lines = ndjson_lines(block)
        # the offsets are those of the lines as written: a dropped byte order mark counts
        bom = 3 if block.first_line == 1 and block.data.startswith(b"\xef\xbb\xbf") else 0
        lengths = lines.get_column(RAW_RECORD).str.len_bytes().cast(pl.Int64) + 1
        offsets = (lengths.cum_sum() - lengths + bom).alias("offset")
        rows = lines.with_columns(offsets).filter(IS_NDJSON_ROW)
        return rows.get_column("offset").to_numpy(), rows.get_column(LINE).cast(pl.Int64).to_numpy()
    starts = csv_record_starts(block.data, csv.quote_byte)
    if block.first_line == 1:
        starts = starts[1 + csv.sep_line :]  # the header, and Excel's sep= line before it
    newlines = np.flatnonzero(np.frombuffer(block.data, dtype=np.uint8) == ord("\n"))
    return starts, block.first_line + np.searchsorted(newlines, starts)


class _Cutter:
    """Turns the stream of row starts into chunk spans."""

    def __init__(self, size: int) -> None:
        self.size, self.seen = size, 0
        self.index, self.start, self.first_line = 0, 0, 1

    def rows(self, offsets: np.ndarray, lines: np.ndarray, total: int) -> Iterator[ChunkSpan]:
        # rows whose number in the file is a multiple of the size start a chunk (row 0: chunk 0, at byte 0)
        numbers = np.arange(self.seen, self.seen + len(offsets))
        for at in np.flatnonzero((numbers % self.size == 0) & (numbers > 0)):
            end = int(offsets[at])
            yield ChunkSpan(self.index, self.start, end, self.first_line, self.size, end / total)
            self.index, self.start, self.first_line = self.index + 1, end, int(lines[at])
        self.seen += len(offsets)

    def last(self, size_bytes: int) -> Iterator[ChunkSpan]:
        rows = self.seen - self.index * self.size
        if rows:
            yield ChunkSpan(self.index, self.start, size_bytes, self.first_line, rows, 1.0)


def _row_spans(rows: int, chunk_size: int) -> Iterator[ChunkSpan]:
    for index, start in enumerate(range(0, rows, chunk_size)):
        end = min(start + chunk_size, rows)
        yield ChunkSpan(index, start, end, start + 1, end - start, end / max(rows, 1))
