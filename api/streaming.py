"""Bridge a writer (a function that writes to a file object) to a streamed HTTP response.

The export core writes to a sink; a response reads from an iterator. The writer runs in its
own thread and hands bytes over through a small bounded queue, so memory stays at a few
blocks whatever the size of the export, and a client that disconnects stops the writer.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Callable, Iterator
from typing import IO, cast

_SLICE = 1 << 20
_DONE = object()


class _ClientGone(Exception):
    """The response's reader went away: stop writing."""


class _QueueSink(io.RawIOBase):
    def __init__(self, handoff: queue.Queue, stop: threading.Event) -> None:
        super().__init__()
        self.handoff, self.stop = handoff, stop

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]  # RawIOBase.write takes any buffer; we are handed bytes
        view = memoryview(bytes(data))
        for start in range(0, len(view), _SLICE):
            put(self.handoff, self.stop, view[start : start + _SLICE])
        return len(view)


def put(handoff: queue.Queue, stop: threading.Event, item: object) -> None:
    """Queue `item`, waiting for room, unless the reader has gone away."""
    while not stop.is_set():
        try:
            handoff.put(item, timeout=0.2)
            return
        except queue.Full:
            continue
    raise _ClientGone


def stream_writer(write: Callable[[IO[bytes]], object], depth: int = 4) -> Iterator[bytes | memoryview]:
    """Run `write(sink)` in a thread and yield what it writes, in order.

    An error in the writer is raised here, after the bytes written before it."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            write(cast(IO[bytes], _QueueSink(handoff, stop)))  # a RawIOBase is a binary stream
            put(handoff, stop, _DONE)
        except _ClientGone:
            return
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            try:
                put(handoff, stop, exc)
            except _ClientGone:
                return

    threading.Thread(target=produce, name="export-stream", daemon=True).start()
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
