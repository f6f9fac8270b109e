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
from queue import Full, Queue
from typing import IO, Any, TypeVar, cast

import polars as pl

from bulkflow.db import connect
from bulkflow.settings import Settings
from decisions.exports import Condition, ExportRequest, export_sql
from decisions.sql import ONE_READ_ONLY_VIEW, id_sample_sql, joined_snapshot_sql, row_estimate_sql
from files.writers import ROW_FORMATS, encode_rows, write_batches, write_encoded
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

    @property
    def rows_per_s(self) -> float:
        return round(self.rows / self.duration_s, 1) if self.duration_s > 0 else 0.0


def stream_export(
    request: ExportRequest,
    sink: IO[bytes],
    *,
    settings: Settings,
    digest: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> ExportStats:
    """Query the database and write the export to `sink` batch by batch; returns rows,
    bytes, duration (and sha256). `on_rows` gets the running row count (progress bars).

    An NDJSON or CSV export of a large table is read over `settings.export_connections_here()`
    connections, each a share of the id ranges, all in one snapshot of the table (exported
    by the first, `pg_export_snapshot`): the file is the one view of the table a single
    query would give, written in id order, while imports write to the table."""
    started = time.perf_counter()
    with connect(settings, declared=declared_tables()) as conn, conn.cursor() as cur:
        cur.execute(ONE_READ_ONLY_VIEW)
        wanted = settings.export_connections_here()
        pieces = _id_pieces(cur, request, wanted)
        if len(pieces) == 1:
            connections = 1
            with read_ahead(_fetched(cur, request)) as batches:
                frames = (pl.from_arrow(batch) for batch in batches)
                rows, size, sha256 = write_batches(request, frames, sink, digest=digest, on_rows=on_rows)  # type: ignore[arg-type]  # ADBC record batches are untyped
        else:
            connections = min(wanted, len(pieces))
            with _read_in_pieces(cur, request, pieces, connections, settings) as encoded:
                rows, size, sha256 = write_encoded(request, encoded, sink, digest=digest, on_rows=on_rows)
    return ExportStats(rows, size, round(time.perf_counter() - started, 3), sha256, connections)


def _fetched(cur: Any, request: ExportRequest) -> Iterator[Any]:
    """The record batches of `request`'s query on `cur` (its filter values bound first)."""
    sql, values = export_sql(request)
    for name, value in values.items():
        cur.execute("SELECT set_config($1, $2, true)", parameters=(name, value))
    cur.execute(sql)
    return iter(cur.fetch_record_batch())


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
    if connections == 1 or request.format not in ROW_FORMATS or request.limit is not None:
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
