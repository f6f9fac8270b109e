"""Chunks through their three steps, on whichever runner does the chunk work.

1. check: the database's view of the chunk (in parallel, ahead of the decision);
2. decide: the in-file key decision, here in the flow, strictly in file order, so "first
   accepted occurrence wins" is decided as one sequential pass would;
3. load: exactly once (in parallel, at most `workers` at once).

What a chunk *is* differs by runner (the steps are in `flows/import_flow.py`). With threads
the flow reads and validates each chunk and hands its rows to the check and load tasks. On
Dask a chunk is a span of the file: workers read and validate it themselves, and only keys
and decisions travel.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import polars as pl

from decisions.keys import SeenKeys
from schemas.reports import ChunkResult
from tasks.budget import BudgetWatch
from tasks.jobs import Job
from tasks.report import ImportProgress

Chunk = TypeVar("Chunk")
Checked = TypeVar("Checked")
Decided = TypeVar("Decided")
T_co = TypeVar("T_co", covariant=True)


class Pending(Protocol[T_co]):
    """A step's outcome: a Prefect future (a task run), or a value computed in the flow."""

    def result(self) -> T_co: ...


class Done(Generic[T_co]):
    """A step done already, in the flow itself (no task run)."""

    def __init__(self, value: T_co) -> None:
        self.value = value

    def result(self) -> T_co:
        return self.value


class Steps(ABC, Generic[Chunk, Checked, Decided]):
    """The three steps for one kind of chunk."""

    @abstractmethod
    def check(self, chunk: Chunk, committed: bool) -> Pending[Checked]: ...

    @abstractmethod
    def decide(self, chunk: Chunk, checked: Checked, seen: SeenKeys) -> Decided:
        """The in-file key decision; claims the winners' keys in `seen`."""

    @abstractmethod
    def load(self, chunk: Chunk, decided: Decided) -> Pending[ChunkResult]: ...

    @abstractmethod
    def accepted(self, decided: Decided) -> int:
        """How many of the chunk's rows the decision accepts (the others are rejected)."""

    def accepted_rows(self, decided: Decided) -> pl.DataFrame | None:
        """The chunk's accepted rows, when the flow holds them (None: they are on a worker)."""
        return None


class ChunkPipeline(Generic[Chunk, Checked, Decided]):
    """Feed chunks in file order with `add`, then `finish`. The chunks an earlier run
    committed are checked and decided all the same, so in-file duplicates are judged as in
    that run, but not loaded again. At most `ahead` chunks are checked ahead of the
    decision, and `workers` loaded at once; `seen` holds the keys accepted so far. With a
    `budget`, the rows decided so far are judged after each decision; once it is spent,
    every decided chunk is loaded first (its rejects recorded), then the budget acts
    (abort, pause, or go on). `on_load` is handed each chunk's load as it starts, in file
    order, with its accepted rows when the flow holds them (an all-or-nothing job's apply
    writes the chunk once it is staged)."""

    def __init__(
        self,
        steps: Steps[Chunk, Checked, Decided],
        job: Job,
        progress: ImportProgress,
        *,
        workers: int,
        ahead: int,
        seen: SeenKeys,
        budget: BudgetWatch | None = None,
        on_load: Callable[[Pending[ChunkResult], pl.DataFrame | None], None] | None = None,
    ) -> None:
        self.steps, self.job, self.progress, self.budget, self.on_load = steps, job, progress, budget, on_load
        self.workers, self.ahead = workers, ahead
        self.seen = seen
        self.checking: deque[tuple[Chunk, int, int, Pending[Checked], float]] = deque()
        self.loading: deque[tuple[Pending[ChunkResult], float, float]] = deque()

    def add(self, chunk: Chunk, index: int, rows_read: int, fraction: float) -> None:
        checked = self.steps.check(chunk, index in self.job.done_chunks)
        self.progress.read(fraction)
        self.checking.append((chunk, index, rows_read, checked, fraction))
        if len(self.checking) > self.ahead:
            self._decide_oldest()

    def finish(self) -> None:
        while self.checking:
            self._decide_oldest()
        while self.loading:
            self._finish_oldest_load()

    def _decide_oldest(self) -> None:
        chunk, index, rows_read, checked, fraction = self.checking.popleft()
        facts = checked.result()
        self.progress.checked(fraction)
        decided = self.steps.decide(chunk, facts, self.seen)
        if index in self.job.done_chunks:
            self.progress.skipped(rows_read, fraction)
        else:
            load = self.steps.load(chunk, decided)
            self.loading.append((load, time.perf_counter(), fraction))
            if self.on_load is not None:
                self.on_load(load, self.steps.accepted_rows(decided))
        if self.budget is not None:
            self._judge(self.budget, rows_read, rows_read - self.steps.accepted(decided))
        while len(self.loading) > self.workers:
            self._finish_oldest_load()

    def _judge(self, budget: BudgetWatch, rows_read: int, rejected: int) -> None:
        why = budget.spent(rows_read, rejected)
        if why is not None:
            while self.loading:
                self._finish_oldest_load()
            budget.act(why)

    def _finish_oldest_load(self) -> None:
        future, submitted, fraction = self.loading.popleft()
        self.progress.chunk_done(future.result(), time.perf_counter() - submitted, fraction)
