"""The apply begun as an all-or-nothing job's chunks are staged holds the accepted rows of
at most `BACKLOG` chunks waiting for its write: the flow handing it one more waits, so a
slow apply slows the reading instead of gathering the file in memory."""

from __future__ import annotations

import threading

import polars as pl

from bulkflow.settings import Settings
from schemas import get_resource
from schemas.reports import ChunkResult
from tasks.apply import BACKLOG, ApplyAsStaged
from tasks.jobs import Job


class _HeldLoad:
    """A chunk's load that ends (failing, so the apply writes nothing) once released."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def result(self) -> ChunkResult:
        self.released.wait(10)
        raise RuntimeError("the chunk's load failed")


def _job() -> Job:
    return Job(
        key="backlog",
        resource=get_resource("users"),
        chunk_size=2,
        done_chunks=frozenset(),
        source_name="f",
        atomic=True,
    )


def test_the_flow_waits_while_backlog_chunks_wait_for_the_apply() -> None:
    applying = ApplyAsStaged(Settings(_env_file=None), _job(), None)
    loads = [_HeldLoad() for _ in range(BACKLOG + 1)]
    rows = pl.DataFrame({"id": ["u1"]})
    try:
        for load in loads[:BACKLOG]:
            applying.follow(load, rows)  # each returns at once: BACKLOG chunks may wait
        one_more = threading.Thread(target=applying.follow, args=(loads[BACKLOG], rows))
        one_more.start()
        one_more.join(0.3)
        assert one_more.is_alive(), "the flow went on with more chunks waiting than the backlog allows"
        loads[0].released.set()  # the apply takes the first chunk off the backlog
        one_more.join(10)
        assert not one_more.is_alive()
    finally:
        for load in loads:
            load.released.set()
        applying.close()
    assert applying.given_up == "a chunk failed"
