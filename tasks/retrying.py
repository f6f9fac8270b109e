"""How bulkflow's steps are retried: only when the error is retryable (database down,
connection lost, conflicts in flight). The Prefect task options the tasks share (never
cached), and the plain calls that stand in for tasks, retried as those would be: in the
flow itself (`in_flow`, `with_chunk_retries`) or on a run's chunk threads (`ChunkThreads`)."""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from bulkflow.errors import first_line, is_retryable, retry_condition

CHUNK_RETRY_DELAYS_S = [1, 5, 15]
T = TypeVar("T")
P = ParamSpec("P")


def chunk_task_options(name: str, run_name: str) -> dict[str, Any]:
    """Options for `@task(**...)` of a task that works on one chunk."""
    return {
        "name": name,
        "task_run_name": run_name,
        "retries": len(CHUNK_RETRY_DELAYS_S),
        "retry_delay_seconds": CHUNK_RETRY_DELAYS_S,
        "retry_condition_fn": retry_condition,
        "cache_policy": NO_CACHE,
        "persist_result": False,
    }


def bookkeeping_task_options(name: str, run_name: str, retry_delay_s: int = 2) -> dict[str, Any]:
    """Options for `@task(**...)` of a task that reads or writes the run's bookkeeping (a job,
    a landed file): three retries, `retry_delay_s` apart."""
    return {
        "name": name,
        "task_run_name": run_name,
        "retries": 3,
        "retry_delay_seconds": retry_delay_s,
        "retry_condition_fn": retry_condition,
        "cache_policy": NO_CACHE,
    }


def in_flow(task: Task[P, T]) -> Callable[P, T]:
    """A bookkeeping task's function, called in the flow itself and tried again as the task
    would be (`bookkeeping_task_options`)."""
    given = task.retry_delay_seconds
    delays = list(given) if isinstance(given, list) else [given or 0] * task.retries

    def call(*args: P.args, **kwargs: P.kwargs) -> T:
        return with_retries(lambda: task.fn(*args, **kwargs), task.name, delays)

    return call


def bookkeeping_step(task: Task[P, T], small_file: bool) -> Callable[P, T]:
    """A bookkeeping task, or for a small file its function called in the flow, retried as the
    task would be (`in_flow`): a few task runs cost such a file more than their work, and
    their events were most of what the Prefect server did for a landing of many small files."""
    return in_flow(task) if small_file else task


def with_chunk_retries(call: Callable[[], T], what: str) -> T:
    """`call()` in the flow itself, tried again as a chunk task would be (`with_retries`
    after each of CHUNK_RETRY_DELAYS_S)."""
    return with_retries(call, what, CHUNK_RETRY_DELAYS_S)


class ChunkThreads:
    """The threads a flow runs its chunk steps on, as plain calls: each in a copy of the
    submitter's context (the step logs to the flow's run) and tried again as a chunk task
    would be (`with_chunk_retries`). Not task runs: a task run cost the Prefect server about
    35 ms of CPU (its states' events stored and recorded), 1.4 CPU-s of a 1M-row import."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunk-step")

    def submit(self, call: Callable[[], T], what: str) -> Future[T]:
        """Run `call` on a thread of the pool, retried as a chunk task's would be."""
        return self._pool.submit(contextvars.copy_context().run, with_chunk_retries, call, what)

    def __enter__(self) -> ChunkThreads:
        return self

    def __exit__(self, *failed: object) -> None:
        """Wait for the steps running; the ones not started yet are dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def with_retries(call: Callable[[], T], what: str, delays: Sequence[float]) -> T:
    """`call()`, tried again after each of `delays` when it fails retryably (the database
    away), at once otherwise."""
    for attempt, delay in enumerate(delays, start=1):
        try:
            return call()
        except Exception as failure:
            if not is_retryable(failure):
                raise
            get_run_logger().warning(
                "%s failed (%s): retry %d/%d in %d s",
                what,
                first_line(failure),
                attempt,
                len(delays),
                delay,
            )
            time.sleep(delay)
    return call()
