"""The streaming export core, shared by the CLI, the export flow and the HTTP API.

Rows come from PostgreSQL as Arrow record batches (ADBC streams them with binary COPY)
and are written batch by batch, so memory stays flat whatever the table size. Order is
stable (by id). Timestamps are ISO-8601 UTC; `tags` is a JSON array in NDJSON/JSON and
CSV (the encoding our import reads back) and a list column in Parquet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import chain
from queue import Full, Queue
from typing import IO, Any, TypeVar, cast

import polars as pl

from bulkflow.db import connect, fetch_one
from bulkflow.errors import CursorExpired
from bulkflow.settings import Settings
from decisions.cursors import Cursor
from decisions.exports import Condition, ExportRequest, export_sql, partition_census, refuse_one_stream
from decisions.partitions import refuse_unwieldy
from decisions.sql import (
    CURSOR_SQL,
    ONE_READ_ONLY_VIEW,
    id_sample_sql,
    joined_snapshot_sql,
    row_estimate_sql,
    tombstones_sql,
    truncated_since_sql,
)
from files.writers import (
    ROW_FORMATS,
    PartOpener,
    Written,
    dataset_digest,
    encode_rows,
    write_batches,
    write_deletes,
    write_encoded,
    write_partitioned,
)
from schemas import declared_tables

T = TypeVar("T")


@dataclass(frozen=True)
class ExportStats:
    rows: int
    bytes: int
    duration_s: float
    sha256: str | None
    connections: int = 1
    """The connections the rows were read over (id ranges of one snapshot)."""
    deleted: int = 0
    """Rows deleted since the cursor (an incremental export): tombstones after the rows, or
    the rows of the deletes file."""
    deletes: Written | None = None
    """The deletes file of an incremental CSV or Parquet export."""
    cursor: str | None = None
    """The token the next incremental export starts from (None when a limit cut the rows)."""
    files: tuple[tuple[str, Written], ...] = ()
    """A partitioned export's files: each one's path in the dataset and what it holds."""

    @property
    def rows_per_s(self) -> float:
        return round(self.rows / self.duration_s, 1) if self.duration_s > 0 else 0.0


@dataclass(frozen=True)
class OpenExport:
    """An export's one read-only view of the database, open: its cursor is known before a
    byte is written (an HTTP response sends it as a header), `write` writes it once."""

    request: ExportRequest
    cursor: str | None
    cur: Any
    settings: Settings
    started: float

    def write(
        self,
        sink: IO[bytes],
        *,
        deletes: IO[bytes] | None = None,
        digest: bool = False,
        on_rows: Callable[[int], None] | None = None,
    ) -> ExportStats:
        """Write the rows (and the deletes since the cursor: among them for NDJSON and JSON,
        to `deletes` for CSV and Parquet) to `sink` batch by batch; `on_rows` gets the
        running row count (progress bars).

        An NDJSON or CSV export of a large table is read over `settings.export_connections_here()`
        connections, each a share of the id ranges, all in one snapshot of the table (exported
        by the first, `pg_export_snapshot`): the file is the one view of the table a single
        query would give, written in id order, while imports write to the table."""
        request, cur = self.request, self.cur
        if request.partitioning is not None or (request.deletes_apart and deletes is None):
            refuse_one_stream(request)
        wanted = self.settings.export_connections_here()
        pieces = _id_pieces(cur, request, wanted)
        gone: list[pl.DataFrame] = []
        if len(pieces) == 1:
            connections = 1
            with read_ahead(_fetched(cur, request)) as batches:
                frames: Iterable[pl.DataFrame] = (
                    cast(pl.DataFrame, pl.from_arrow(b)) for b in batches
                )  # a batch is a frame
                if request.since is not None and not request.deletes_apart:
                    frames = chain(frames, _tombstones(cur, request, gone))
                written = write_batches(request, frames, sink, digest=digest, on_rows=on_rows)
        else:
            connections = min(wanted, len(pieces))
            with _read_in_pieces(cur, request, pieces, connections, self.settings) as encoded:
                written = write_encoded(request, encoded, sink, digest=digest, on_rows=on_rows)
        tombstones = sum(frame.height for frame in gone)
        deletes_file = self._write_deletes(deletes, digest)
        return self._stats(written.rows - tombstones, written, connections, deletes_file, tombstones)

    def write_dataset(
        self,
        open_part: PartOpener,
        *,
        deletes: IO[bytes] | None = None,
        digest: bool = False,
        on_rows: Callable[[int], None] | None = None,
    ) -> ExportStats:
        """Write a partitioned export as a Parquet dataset, each file opened by `open_part`
        with its path in the dataset (`write_partitioned`), and the deletes since the cursor
        to `deletes`. A dataset of too many partitions, or of values too long to name a
        directory, is refused before a file is opened."""
        request, cur = self.request, self.cur
        partitioning = request.partitioning
        assert partitioning is not None, "only a partitioned export writes a dataset"
        assert deletes is not None or not request.deletes_apart, "an incremental dataset's deletes need a file"
        census, values = partition_census(request)
        _bind(cur, values)
        cur.execute(census)
        partitions, longest = fetch_one(cur)
        refuse_unwieldy(partitioning, int(partitions), int(longest))
        with read_ahead(_fetched(cur, request)) as batches:
            frames = (cast(pl.DataFrame, pl.from_arrow(b)) for b in batches)  # a batch is a frame
            files = write_partitioned(request, frames, open_part, digest=digest, on_rows=on_rows)
        rows, size = sum(w.rows for _, w in files), sum(w.bytes for _, w in files)
        written = Written(rows, size, dataset_digest(files) if digest else None)
        return replace(self._stats(rows, written, 1, self._write_deletes(deletes, digest)), files=tuple(files))

    def _write_deletes(self, deletes: IO[bytes] | None, digest: bool) -> Written | None:
        """The deletes file of an incremental CSV or Parquet export, written to `deletes`."""
        if not self.request.deletes_apart or deletes is None:
            return None
        return write_deletes(self.request.format, _gone(self.cur, self.request), deletes, digest=digest)

    def _stats(
        self, rows: int, written: Written, connections: int, deletes_file: Written | None, tombstones: int = 0
    ) -> ExportStats:
        """The export's stats: `rows` of `written`, the deletes in their file or as `tombstones`."""
        return ExportStats(
            rows,
            written.bytes,
            round(time.perf_counter() - self.started, 3),
            written.sha256,
            connections,
            deletes_file.rows if deletes_file else tombstones,
            deletes_file,
            self.cursor,
        )


@contextmanager
def open_export(request: ExportRequest, settings: Settings) -> Iterator[OpenExport]:
    """Open the export's read-only, repeatable-read view and take its cursor (the view's
    snapshot). A cursor it starts from is refused when the tombstones since it may be
    pruned (older than BULKFLOW_TOMBSTONE_DAYS) or the table was truncated since."""
    started = time.perf_counter()
    with connect(settings, declared=declared_tables()) as conn, conn.cursor() as cur:
        cur.execute(ONE_READ_ONLY_VIEW)
        cur.execute(CURSOR_SQL)
        snapshot, now = fetch_one(cur)
        if request.since is not None:
            _refuse_stale(cur, request.since, now, settings)
        cursor = Cursor(request.resource.name, str(snapshot), now).token if request.gives_cursor else None
        yield OpenExport(request, cursor, cur, settings, started)


def stream_export(
    request: ExportRequest,
    sink: IO[bytes],
    *,
    settings: Settings,
    deletes: IO[bytes] | None = None,
    digest: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> ExportStats:
    """Open the export's view and write it (`OpenExport.write`): rows, bytes, duration,
    sha256, the deletes since the cursor and the next cursor."""
    with open_export(request, settings) as export:
        return export.write(sink, deletes=deletes, digest=digest, on_rows=on_rows)


def _refuse_stale(cur: Any, since: Cursor, now: datetime, settings: Settings) -> None:
    since.refuse_if_older_than(now, settings.tombstone_days)
    cur.execute(truncated_since_sql(since.resource, since.snapshot))
    truncated = fetch_one(cur)[0]
    if truncated is not None:
        raise CursorExpired(
            f"{since.resource} was truncated at {truncated:%Y-%m-%d %H:%M:%S} UTC, after the cursor was taken: "
            "a truncate leaves no tombstones. Do a full export (no --since)"
        )


def _gone(cur: Any, request: ExportRequest) -> pl.DataFrame:
    """(id, _deleted_at) of the rows deleted since the request's cursor, by id."""
    assert request.since is not None
    cur.execute(tombstones_sql(request.resource.name, request.since.snapshot))
    return cast(pl.DataFrame, pl.from_arrow(cur.fetch_arrow_table()))  # an Arrow table is a frame


def _tombstones(cur: Any, request: ExportRequest, gone: list[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The deletes as NDJSON/JSON tombstones, `{"id", "_deleted": true, "_deleted_at"}`,
    read once the rows are written (kept in `gone` to be counted)."""
    frame = _gone(cur, request)
    gone.append(frame)
    yield frame.select("id", pl.lit(True).alias("_deleted"), "_deleted_at")


def _fetched(cur: Any, request: ExportRequest) -> Iterator[Any]:
    """The record batches of `request`'s query on `cur` (its filter values bound first)."""
    sql, values = export_sql(request)
    _bind(cur, values)
    cur.execute(sql)
    return iter(cur.fetch_record_batch())


def _bind(cur: Any, values: dict[str, str]) -> None:
    """Set the transaction-local settings a query reads its filter values from."""
    for name, value in values.items():
        cur.execute("SELECT set_config($1, $2, true)", parameters=(name, value))


_PARALLEL_FROM_ROWS = 200_000
"""Below this many rows (the planner's estimate), one connection is as fast."""
_PIECES_PER_CONNECTION = 4
_SAMPLED_IDS = 10_000
"""About this many ids sampled to cut the id ranges."""

Piece = tuple[object | None, object | None]
"""An id range: [lower, upper), None where it is open."""


def _id_pieces(cur: Any, request: ExportRequest, connections: int) -> list[Piece]:
    """The id ranges to read: one (the whole table) unless the export is of a row format,
    without a limit, of a table large enough; then cut at ids sampled from the table
    (TABLESAMPLE), about even in rows."""
    if connections == 1 or request.format not in ROW_FORMATS or request.limit is not None or request.since:
        return [(None, None)]
    table = request.resource.name
    cur.execute(row_estimate_sql(table))
    estimate = float(cur.fetchone()[0])
    if estimate < _PARALLEL_FROM_ROWS:
        return [(None, None)]
    cur.execute(id_sample_sql(table, min(100.0, 100.0 * _SAMPLED_IDS / max(estimate, 1.0))))
    sampled = [row[0] for row in cur.fetchall()]
    count = connections * _PIECES_PER_CONNECTION
    cuts = list(dict.fromkeys(sampled[len(sampled) * i // count] for i in range(1, count) if sampled))
    return list(zip([None, *cuts], [*cuts, None], strict=True))


def _piece_request(request: ExportRequest, piece: Piece) -> ExportRequest:
    lower, upper = piece
    bounds = [Condition("id", ">=", lower)] if lower is not None else []
    bounds += [Condition("id", "<", upper)] if upper is not None else []
    return replace(request, conditions=(*request.conditions, *bounds))


@contextmanager
def _read_in_pieces(
    leader: Any, request: ExportRequest, pieces: list[Piece], connections: int, settings: Settings
) -> Iterator[Iterator[tuple[int, bytes]]]:
    """The pieces' rows encoded (rows, bytes), in piece order: `connections` threads each
    read and encode every `connections`-th piece, the first on `leader` (whose snapshot the
    others join), at most `_AHEAD` batches ahead of the writer for each piece."""
    leader.execute("SELECT pg_export_snapshot()")
    snapshot = str(leader.fetchone()[0])
    queues: list[Queue[tuple[int, bytes] | _Fetched]] = [Queue(maxsize=_AHEAD) for _ in pieces]
    stop = threading.Event()

    def cursor_of(worker: int) -> AbstractContextManager[Any]:
        return nullcontext(leader) if worker == 0 else _joined(settings, snapshot)

    def read(worker: int) -> None:
        index = worker
        try:
            with cursor_of(worker) as cur:
                for index in range(worker, len(pieces), connections):
                    for batch in _fetched(cur, _piece_request(request, pieces[index])):
                        frame = cast(pl.DataFrame, pl.from_arrow(batch))  # a record batch is a frame
                        if not _offer(queues[index], (frame.height, encode_rows(request, frame)), stop):
                            return
                    if not _offer(queues[index], _Fetched(None), stop):
                        return
        except BaseException as error:  # handed over to the writer's thread, raised there
            _offer(queues[index], _Fetched(error), stop)

    def received() -> Iterator[tuple[int, bytes]]:
        for queue in queues:
            while not isinstance(item := queue.get(), _Fetched):
                yield item
            if item.error is not None:
                raise item.error

    readers = [
        threading.Thread(target=read, args=(w,), name=f"export-read-{w}", daemon=True) for w in range(connections)
    ]
    for reader in readers:
        reader.start()
    try:
        yield received()
    finally:
        stop.set()
        for reader in readers:
            reader.join()


@contextmanager
def _joined(settings: Settings, snapshot: str) -> Iterator[Any]:
    """A cursor on a connection of its own, in the snapshot `snapshot`, read-only."""
    with connect(settings, migrate=False) as conn, conn.cursor() as cur:
        cur.execute(ONE_READ_ONLY_VIEW)
        cur.execute(joined_snapshot_sql(snapshot))
        yield cur


_AHEAD = 2
"""Batches fetched ahead of the writer."""


@contextmanager
def read_ahead(batches: Iterable[T]) -> Iterator[Iterator[T]]:
    """`batches`, fetched by a thread of their own at most `_AHEAD` ahead: the database
    sends (and the driver decodes) the next batch while this thread formats the last one,
    instead of each waiting for the other. An error while fetching is raised here; leaving
    the block early stops the fetching thread before the connection closes."""
    queue: Queue[T | _Fetched] = Queue(maxsize=_AHEAD)
    stop = threading.Event()

    def fetch() -> None:
        end = _Fetched(None)
        try:
            for batch in batches:
                if not _offer(queue, batch, stop):
                    return
        except BaseException as error:  # handed over to the writer's thread, raised there
            end = _Fetched(error)
        _offer(queue, end, stop)

    def received() -> Iterator[T]:
        while not isinstance(item := queue.get(), _Fetched):
            yield item
        if item.error is not None:
            raise item.error

    fetcher = threading.Thread(target=fetch, name="export-fetch", daemon=True)
    fetcher.start()
    try:
        yield received()
    finally:
        stop.set()
        fetcher.join()


@dataclass(frozen=True)
class _Fetched:
    """The end of the batches: all fetched (no error), or the error that ended them."""

    error: BaseException | None


def _offer(queue: Queue[Any], item: object, stop: threading.Event) -> bool:
    """Put `item` once there is room, unless the reader stopped; False if it did."""
    while not stop.is_set():
        try:
            queue.put(item, timeout=0.1)
            return True
        except Full:
            continue
    return False
