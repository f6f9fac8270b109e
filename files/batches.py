"""What the readers hand on: batches of text rows, and the spans of a file a chunk lies in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

from files.records import (
    Block,
    Oversized,
    Readable,
    record_blocks,
)


@dataclass(frozen=True)
class TextSpan:
    """Whole records of a text file: `size` bytes of `stream` from its position, the first
    record starting on physical line `first_line` (1: the file from its start)."""

    stream: Readable
    size: int
    first_line: int

    def record_blocks(self, *, quote: bytes | None, max_record: int) -> Iterator[Block | Oversized]:
        return record_blocks(self.stream, self.size, quote=quote, max_record=max_record, first_line=self.first_line)


@dataclass(frozen=True)
class Batch:
    """Records read from the file, and how far through the file they reach (0..1)."""

    rows: pl.DataFrame
    progress: float


@dataclass(frozen=True)
class ChunkSpan:
    """Where chunk `index` lies (see `files/spans.py`): bytes [start, end) of a text file,
    its first record on line `first_line` (chunk 0 starts at byte 0, with the CSV header);
    for Parquet, rows [start, end). A reader must find exactly `rows` rows there."""

    index: int
    start: int
    end: int
    first_line: int
    rows: int
    progress: float
    """How far through the file the chunk reaches (0..1)."""
