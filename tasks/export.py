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
from contextlib import contextmanager
from dataclasses import dataclass
from queue import Full, Queue
from typing import IO, Any, TypeVar

import polars as pl

from bulkflow.db import connect
from bulkflow.settings import Settings
from decisions.exports import ExportRequest, export_sql
from files.writers import write_batches
from schemas import declared_tables

T = TypeVar("T")


@dataclass(frozen=True)
class ExportStats:
    rows: int
    bytes: int
    duration_s: float
    sha256: str | None

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
    bytes, duration (and sha256). `on_rows` gets the running row count (progress bars)."""
    started = time.perf_counter()
    sql, values = export_sql(request)
    with connect(settings, declared=declared_tables()) as conn, conn.cursor() as cur:
        for name, value in values.items():
            cur.execute("SELECT set_config($1, $2, true)", parameters=(name, value))
        cur.execute(sql)
        with read_ahead(cur.fetch_record_batch()) as batches:
            frames = (pl.from_arrow(batch) for batch in batches)
            rows, size, sha256 = write_batches(request, frames, sink, digest=digest, on_rows=on_rows)  # type: ignore[arg-type]  # ADBC record batches are untyped
    return ExportStats(rows, size, round(time.perf_counter() - started, 3), sha256)


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
