"""Export files written batch by batch: NDJSON, a JSON array, CSV, Parquet.

Timestamps are ISO-8601 UTC; `tags` is a JSON array in NDJSON/JSON and CSV (the encoding
the import reads back) and a list column in Parquet. Bytes are counted (and hashed) as
they go.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack
from typing import IO, NamedTuple, Protocol, cast

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from decisions.exports import ExportRequest
from decisions.parsers import format_text_list
from decisions.partitions import ROWS_PER_FILE, Partitioning
from decisions.sql import PARTITION_COLUMN
from files.timestamp_text import UTC_TIMESTAMP_FORMAT, utc_timestamp_texts, zoned_timestamp_columns


class Written(NamedTuple):
    """What a writer wrote: rows, bytes and their sha256 (when asked for)."""

    rows: int
    bytes: int
    sha256: str | None


class _MeteredSink(io.RawIOBase):
    """Counts (and optionally hashes) the bytes written through it."""

    def __init__(self, sink: IO[bytes], digest: bool) -> None:
        super().__init__()
        self.sink = sink
        self.bytes = 0
        self.hash = hashlib.sha256() if digest else None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]  # RawIOBase.write takes any buffer; we are handed bytes
        data = bytes(data)
        self.sink.write(data)
        self.bytes += len(data)
        if self.hash is not None:
            self.hash.update(data)
        return len(data)

    def written(self, rows: int) -> Written:
        """What went through: `rows`, the bytes counted and their sha256 (when hashed)."""
        return Written(rows, self.bytes, self.hash.hexdigest() if self.hash is not None else None)


def write_batches(
    request: ExportRequest,
    batches: Iterable[pl.DataFrame],
    sink: IO[bytes],
    *,
    digest: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> Written:
    """Write typed batches in the request's format: rows, bytes, sha256 (with `digest`)."""

    def written(metered: _MeteredSink) -> Iterator[int]:
        writer = _WRITERS[request.format](metered, request)
        for frame in batches:
            if frame.height:
                writer.write(frame)
                yield frame.height
        writer.close()

    return _counted(written, sink, digest, on_rows)


def write_encoded(
    request: ExportRequest,
    chunks: Iterable[tuple[int, bytes]],
    sink: IO[bytes],
    *,
    digest: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> Written:
    """Write batches `encode_rows` encoded, given as (rows, bytes), in order, after the CSV
    header: rows, bytes, sha256, as `write_batches`."""

    def written(metered: _MeteredSink) -> Iterator[int]:
        if request.format == "csv":
            metered.write(csv_header(request.fields))
        for height, data in chunks:
            metered.write(data)
            yield height

    return _counted(written, sink, digest, on_rows)


def _counted(
    written: Callable[[_MeteredSink], Iterator[int]],
    sink: IO[bytes],
    digest: bool,
    on_rows: Callable[[int], None] | None,
) -> Written:
    """Run `written` on a metered `sink` (it yields the rows of each batch as it writes
    them): (rows, bytes, sha256 or None), the running row count handed to `on_rows`."""
    metered = _MeteredSink(sink, digest)
    rows = 0
    for height in written(metered):
        rows += height
        if on_rows is not None:
            on_rows(rows)
    return metered.written(rows)


def write_deletes(format: str, gone: pl.DataFrame, sink: IO[bytes], *, digest: bool = False) -> Written:
    """The deletes file of an incremental CSV or Parquet export: `gone`'s rows (id,
    _deleted_at), timestamps as the rows' own."""
    metered = _MeteredSink(sink, digest)
    if format == "csv":
        _csv_text(gone).write_csv(binary(metered), datetime_format=UTC_TIMESTAMP_FORMAT)
    else:
        gone.write_parquet(binary(metered))
    return metered.written(gone.height)


PartOpener = Callable[[str], AbstractContextManager[IO[bytes]]]
"""Opens a dataset's file for writing, given its path relative to the dataset."""


def write_partitioned(
    request: ExportRequest,
    batches: Iterable[pl.DataFrame],
    open_part: PartOpener,
    *,
    digest: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> list[tuple[str, Written]]:
    """Write batches ordered by their partition value (`PARTITION_COLUMN`, dropped from the
    files) as a Hive-style Parquet dataset, one file open at a time, a new one per partition
    and every `ROWS_PER_FILE` rows: each file's relative path and what was written to it."""
    assert request.partitioning is not None, "only a partitioned export writes a dataset"
    dataset = _Dataset(request, request.partitioning, open_part, digest)
    rows = 0
    with dataset:
        for frame in batches:
            for value, rows_of_value in _runs_of_values(frame):
                dataset.write(value, rows_of_value)
            rows += frame.height
            if on_rows is not None and frame.height:
                on_rows(rows)
    return dataset.files


def dataset_digest(files: Iterable[tuple[str, Written]]) -> str:
    """A dataset's sha256: of its listing as `sha256sum` prints it (`<sha256>  <path>` per
    file, by path), so that one value checks every file and which file holds what."""
    listing = "".join(f"{written.sha256}  {path}\n" for path, written in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()


def _runs_of_values(frame: pl.DataFrame) -> Iterator[tuple[str | None, pl.DataFrame]]:
    """A batch ordered by partition value, cut where the value changes: (value, its rows)."""
    if not frame.height:
        return
    for (value,), rows in frame.partition_by(PARTITION_COLUMN, maintain_order=True, as_dict=True).items():
        yield cast(str | None, value), rows.drop(PARTITION_COLUMN)


class _OpenPart(NamedTuple):
    value: str | None
    number: int
    """The part's place among its partition's files (`part-0000`, `part-0001`...)."""
    path: str
    file: ExitStack
    sink: _MeteredSink
    writer: _ParquetWriter


class _Dataset:
    """The file being written (at most one open), and those closed, with what they hold."""

    def __init__(self, request: ExportRequest, partitioning: Partitioning, open_part: PartOpener, digest: bool) -> None:
        self.request, self.partitioning, self.open_part, self.digest = request, partitioning, open_part, digest
        self.files: list[tuple[str, Written]] = []
        self.part: _OpenPart | None = None
        self.rows_in_part = 0

    def write(self, value: str | None, frame: pl.DataFrame) -> None:
        """Add rows of the partition `value` (after those of any other value written)."""
        while frame.height:
            if self.part is None or self.part.value != value or self.rows_in_part >= ROWS_PER_FILE:
                self.part = self._start(value, after=self._close())
            room = ROWS_PER_FILE - self.rows_in_part
            self.part.writer.write(frame.head(room))
            self.rows_in_part += min(room, frame.height)
            frame = frame.slice(room)

    def _start(self, value: str | None, after: _OpenPart | None) -> _OpenPart:
        """Open the next file of `value`'s rows, `after` the file just closed."""
        # The rows come ordered by value: a value's next part follows its last, or it is new.
        number = after.number + 1 if after is not None and after.value == value else 0
        path = self.partitioning.part(value, number)
        file = ExitStack()
        sink = _MeteredSink(file.enter_context(self.open_part(path)), self.digest)
        self.rows_in_part = 0
        return _OpenPart(value, number, path, file, sink, _ParquetWriter(sink, self.request))

    def _close(self) -> _OpenPart | None:
        """Finish the open file, if any, and list it; the file closed."""
        part, self.part = self.part, None
        if part is not None:
            part.writer.close()
            part.file.close()
            self.files.append((part.path, part.sink.written(self.rows_in_part)))
        return part

    def __enter__(self) -> _Dataset:
        return self

    def __exit__(self, *failed: object) -> None:
        if failed[0] is None:
            self._close()
        elif self.part is not None:
            self.part.file.close()


class _NdjsonWriter:
    def __init__(self, sink: _MeteredSink, request: ExportRequest) -> None:
        self.sink = sink

    def write(self, frame: pl.DataFrame) -> None:
        frame.write_ndjson(binary(self.sink))

    def close(self) -> None:
        return None


class _JsonArrayWriter(_NdjsonWriter):
    """One JSON array, written element by element (NDJSON lines joined by commas)."""

    def __init__(self, sink: _MeteredSink, request: ExportRequest) -> None:
        super().__init__(sink, request)
        self.sink.write(b"[")
        self.first = True

    def write(self, frame: pl.DataFrame) -> None:
        lines = frame.write_ndjson().rstrip("\n").replace("\n", ",\n")
        self.sink.write(("\n" if self.first else ",\n").encode() + lines.encode())
        self.first = False

    def close(self) -> None:
        self.sink.write(b"\n]\n" if not self.first else b"]\n")


class _CsvWriter:
    def __init__(self, sink: _MeteredSink, request: ExportRequest) -> None:
        self.sink = sink
        self.header = True
        self.fields = request.fields

    def write(self, frame: pl.DataFrame) -> None:
        _csv_text(frame).write_csv(binary(self.sink), include_header=self.header, datetime_format=UTC_TIMESTAMP_FORMAT)
        self.header = False

    def close(self) -> None:
        if self.header:  # no rows: still a header, so the file says what it holds
            self.sink.write(csv_header(self.fields))


def _csv_text(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame as CSV writes it: timestamps as UTC text (`utc_timestamp_texts`, or naive
    UTC for `UTC_TIMESTAMP_FORMAT` where no table covers the batch's days), tags as JSON."""
    texts = utc_timestamp_texts(frame) or [
        pl.col(name).dt.convert_time_zone("UTC").dt.replace_time_zone(None) for name in zoned_timestamp_columns(frame)
    ]
    if "tags" in frame.columns:
        texts.append(format_text_list(pl.col("tags")).alias("tags"))
    return frame.with_columns(texts)


def csv_header(fields: tuple[str, ...]) -> bytes:
    return (",".join(fields) + "\n").encode()


ROW_FORMATS = ("ndjson", "csv")
"""The formats whose batches are encoded apart from one another (`encode_rows`)."""


def encode_rows(request: ExportRequest, frame: pl.DataFrame) -> bytes:
    """One batch in a row format, without a header: batches encoded apart (on other
    threads) and written in order make the file `write_batches` would (the CSV header
    first, `csv_header`)."""
    out = io.BytesIO()
    if request.format == "csv":
        _csv_text(frame).write_csv(out, include_header=False, datetime_format=UTC_TIMESTAMP_FORMAT)
    else:
        frame.write_ndjson(out)
    return out.getvalue()


class _ParquetWriter:
    def __init__(self, sink: _MeteredSink, request: ExportRequest) -> None:
        schema = request.resource.polars_schema()
        self.empty = pl.DataFrame(schema={f: schema[f] for f in request.fields})
        self.writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), self.empty.to_arrow().schema)

    def write(self, frame: pl.DataFrame) -> None:
        self.writer.write_table(frame.cast(self.empty.schema).to_arrow())

    def close(self) -> None:
        self.writer.close()


class _BatchWriter(Protocol):
    def write(self, frame: pl.DataFrame) -> None: ...

    def close(self) -> None: ...


def binary(sink: _MeteredSink) -> IO[bytes]:
    """The sink as the binary stream polars writes to (a RawIOBase is one)."""
    return cast(IO[bytes], sink)


_WRITERS: dict[str, Callable[[_MeteredSink, ExportRequest], _BatchWriter]] = {
    "ndjson": _NdjsonWriter,
    "json": _JsonArrayWriter,
    "csv": _CsvWriter,
    "parquet": _ParquetWriter,
}
