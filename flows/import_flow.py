"""The import flow: only wiring. Reading, checking and loading live in `tasks/`."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, islice
from typing import Any, TypeVar

import polars as pl
from prefect import get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import TaskRunner

from bulkflow.console import quiet_tracebacks
from bulkflow.errors import AbandonedImport, InputError, InvariantError, ParameterError, is_retryable
from bulkflow.settings import Settings
from decisions.budget import RejectBudget
from decisions.checks import database_facts
from decisions.decide import CheckedChunk, ChunkKeys, DatabaseFacts, KeyDecision, decide, decide_keys
from decisions.keys import SeenKeys
from decisions.rules import RecordCheck, check_records
from files.batches import ChunkSpan
from files.formats import display_name, records_at_most
from files.read import SharedFile, read_chunks, shared_file
from files.spans import plan_spans
from files.staging import StagedSource
from flows.chunk_pipeline import Checked, Chunk, ChunkPipeline, Decided, Done, Pending, Steps
from schemas import get_resource
from schemas.columns import ACCEPTED
from schemas.parameters import Format, ImportOptions, OptionalFormat, ResourceName
from schemas.reports import ChunkResult, FileReading, ImportReport
from schemas.resource import Resource, RuleContext
from tasks import events
from tasks.apply import ApplyAsStaged, apply_as_staged, apply_staged
from tasks.budget import BudgetWatch
from tasks.cluster import dask_task_runner
from tasks.history import RunStart, record_import
from tasks.jobs import ChunkLedger, Job, close_job, open_job, read_rejects, record_failure, set_aside
from tasks.landing import discard_upload
from tasks.limits import SlotClaim, prepare_table_slot, table_slot, table_work
from tasks.load import apply_chunk
from tasks.on_workers import check_span, load_span
from tasks.prefect_defaults import flow
from tasks.profiles import with_profile
from tasks.replay import replay_source
from tasks.report import ImportProgress, publish_report
from tasks.retrying import ChunkThreads, bookkeeping_step, with_chunk_retries
from tasks.run_labels import DRY_RUN, VIA_PREFIX, import_run_name, label_run, tag_retryable_failure, untagged_tasks
from tasks.stage import stage

T = TypeVar("T")


def _run_name() -> str:
    parameters = flow_run.parameters
    given = ImportOptions.of(parameters.get("options")).given_name
    return import_run_name(str(parameters["resource"]), str(parameters["source"]), given)


@flow(
    name="import",
    flow_run_name=_run_name,
    validate_parameters=True,
    persist_result=True,
    result_serializer="json",
)
def import_flow(
    resource: ResourceName,
    source: str,
    format: OptionalFormat = None,
    options: ImportOptions = ImportOptions(),
) -> ImportReport:
    """Import `source` into `resource`: every row inserted, updated, unchanged or rejected, exactly once.

    Re-running with the same content (or the same `options.idempotency_key`) skips the chunks
    that earlier runs committed. Returns the run's `ImportReport` (Prefect keeps it as JSON).
    Emits `bulkflow.import.completed` (or `.failed`) for automations.

    Args:
        resource: Where the rows go: users, articles or comments.
        source: The file: a local path, an http(s) URL or an s3:// URL; gzip-compressed too.
            Empty with `options.rejects_of`: the records that import rejected.
        format: csv, ndjson, json or parquet. Leave empty to tell it from the file's name.
        options: How the file is cut into chunks, which job it is, and the name it is shown by.
    """
    quiet_tracebacks()  # the run's console shows its error in one line; the API keeps the traceback
    started = time.perf_counter()
    settings = Settings()  # read once per flow run, then handed down
    definition = get_resource(resource)
    via = label_run(definition.name, {DRY_RUN} if options.dry_run else set())
    start = RunStart(
        str(flow_run.id),
        definition.name,
        display_name(source, options.given_name),
        via.removeprefix(VIA_PREFIX),
        datetime.now(UTC),
    )
    try:
        options = with_profile(settings, options)
        with untagged_tasks(), events.alive():
            if options.rejects_of:
                source = _replayed(settings, definition, source, options.rejects_of)
                options = options.model_copy(update=options.of_replay())
            report = _import(definition, source, format, options, settings, started)
    except BaseException as error:
        record_import(settings, start, None, error)
        events.import_failed(definition.name, display_name(source, options.given_name), error)
        if isinstance(error, InputError) and not options.rejects_of:
            discard_upload(settings, source)
        if is_retryable(error):
            tag_retryable_failure()  # what the landing pick-up reads to leave the file for a later try
        raise
    record_import(settings, start, report, None)
    events.import_completed(report, settings.error_rate_alert)
    return report


def _replayed(settings: Settings, resource: Resource, source: str, rejects_of: str) -> str:
    """The file of the records `rejects_of` rejected, to import instead of a source."""
    if source:
        raise ParameterError(f"give a source or rejects_of ({rejects_of}), not both")
    return replay_source(settings, resource.name, rejects_of)


def _import(
    resource: Resource, source: str, format: Format | None, options: ImportOptions, settings: Settings, started: float
) -> ImportReport:
    # a file of one chunk at most (by its lines) stages and keeps its job in the flow itself
    most = records_at_most(source, format)
    small = most is not None and most <= options.rows_per_chunk(settings.chunk_size)
    with table_work():
        if not options.dry_run:  # a dry run writes nothing to the table: it needs no write slot
            prepare_table_slot(settings)
        staged, reading = bookkeeping_step(stage, small)(resource, source, format, options, settings)
        try:
            slot: AbstractContextManager[SlotClaim | None] = (
                nullcontext(None) if options.dry_run else table_slot(settings, resource.name, get_run_logger().info)
            )
            with slot as claim:
                report = _load(resource, staged, reading, options, settings, started, claim, small)
        finally:
            staged.cleanup()  # a failed run leaves no staged copy behind either
    # after the table work: the next import of a pick-up begins its own meanwhile
    sample = read_rejects(settings, report.job_key, limit=settings.reject_sample_size).drop("raw").to_dicts()
    publish_report(report, sample)
    if not report.invariant_holds:
        job = report.job
        raise InvariantError(
            f"invariant broken: inserted {report.inserted} + updated {report.updated} + unchanged {report.unchanged} "
            f"+ rejected {report.rejected} + "
            f"already committed {report.already_committed} vs rows read {report.rows_read}; the job's "
            f"{job.inserted} + {job.updated} + {job.unchanged} + {job.rejected} vs {job.rows_read}"
        )
    return report


def _load(
    resource: Resource,
    staged: StagedSource,
    reading: FileReading,
    options: ImportOptions,
    settings: Settings,
    started: float,
    slot: SlotClaim | None,
    small: bool,
) -> ImportReport:
    run_id = str(flow_run.id) if flow_run.id else None
    job = bookkeeping_step(open_job, small)(settings, resource, staged, options, run_id)
    ledger = job.ledger(run_id, slot)
    if job.earlier_runs:
        get_run_logger().info(
            "continuing job %s of earlier run(s) %s: %d chunk(s) already committed",
            job.key,
            ", ".join(job.earlier_runs),
            len(job.done_chunks),
        )
    progress = ImportProgress(resource, job.source_name, job.dry_run, with_artifact=not small)
    budget = RejectBudget.of(options)
    watch = (
        BudgetWatch(settings, job, budget, options.on_budget, options.budget_pause_timeout) if budget.is_set else None
    )
    may_pause = watch is not None and watch.on_budget == "pause"
    try:
        with apply_as_staged(settings, job, slot, small_file=small, may_pause=may_pause) as applying:
            work = ChunkWork(settings, job, ledger, staged, progress, watch, applying)
            if settings.task_runner == "dask":
                _chunks_on_dask(work)
            else:
                _chunks_in_threads(work)
            if job.staging and not job.applied:
                apply_staged(settings, job, slot, applying)
    except AbandonedImport as abandoned:
        set_aside(settings, job, run_id, abandoned)
        raise
    except BaseException as error:
        record_failure(settings, job, error)
        raise
    duration = time.perf_counter() - started
    return bookkeeping_step(close_job, small)(settings, job, staged, run_id, duration, reading)


@dataclass(frozen=True)
class ChunkWork:
    """What the chunk work of one run needs, whichever runner does it."""

    settings: Settings
    job: Job
    ledger: ChunkLedger
    staged: StagedSource
    progress: ImportProgress
    budget: BudgetWatch | None
    applying: ApplyAsStaged | None
    """An all-or-nothing job's apply, begun as its chunks are staged, or None."""

    def pipeline(
        self, steps: Steps[Chunk, Checked, Decided], *, workers: int, ahead: int
    ) -> ChunkPipeline[Chunk, Checked, Decided]:
        """The chunk pipeline of this work, whichever the runner: with the file's key state
        (spilling to disk under BULKFLOW_HOME past its memory budget), the budget, and the
        apply begun as the chunks are staged told of each loaded chunk."""
        return ChunkPipeline(
            steps,
            self.job,
            self.progress,
            workers=workers,
            ahead=ahead,
            seen=SeenKeys(spill_dir=self.settings.home / "spill"),
            budget=self.budget,
            on_load=self.applying.follow if self.applying else None,
        )


def _chunks_in_threads(work: ChunkWork) -> None:
    """The flow reads and validates each chunk; threads of the run's own check and load it
    (`ChunkThreads`). A file of one chunk is checked and loaded by the flow itself."""
    settings, job = work.settings, work.job
    batches = read_chunks(work.staged, job.resource, job.chunk_size, settings.max_record_bytes)
    first = deque(islice(batches, 2))  # a second chunk read, or none: the file has more than one, or one
    # the pipeline runs at most load_workers + 1 loads and 2 checks at once
    threads: AbstractContextManager[ChunkThreads | None] = (
        ChunkThreads(settings.load_workers + 3) if len(first) > 1 else nullcontext()
    )
    with threads as chunk_threads:
        chunks = work.pipeline(
            InFlowSteps(settings, job, work.ledger, chunk_threads), workers=settings.load_workers, ahead=1
        )
        context = RuleContext.of(settings, work.staged.values)
        for index, batch in enumerate(chain(_drained(first), batches)):
            check = check_records(job.resource, context, index, batch.rows)
            chunks.add(check, index, check.rows_read, batch.progress)
        chunks.finish()


def _drained(items: deque[T]) -> Iterator[T]:
    """The items, each let go of as it is handed over (a chunk read ahead is not held for
    the whole import)."""
    while items:
        yield items.popleft()


def _chunks_on_dask(work: ChunkWork) -> None:
    """Dask workers read, validate, check and load each chunk's span; the flow plans the
    spans and decides the keys."""
    settings, job = work.settings, work.job
    file = shared_file(work.staged, settings.max_record_bytes)
    get_run_logger().info("chunk work on Dask; workers read %s", file.location)
    with dask_task_runner(settings) as runner:
        steps = OnWorkerSteps(settings, job, work.ledger, file, runner)
        workers = settings.dask_workers
        chunks = work.pipeline(steps, workers=workers, ahead=workers)
        for span in plan_spans(work.staged, job.chunk_size, settings.max_record_bytes):
            chunks.add(span, span.index, span.rows, span.progress)
        chunks.finish()


class InFlowSteps(Steps[RecordCheck, DatabaseFacts, CheckedChunk]):
    """Threads: the flow read and validated the chunk; its check and load are plain calls,
    retried as chunk tasks would be, on the run's `threads`, or in the flow itself for a file
    of one chunk (None: a thread hand-off costs more than such a chunk's work)."""

    def __init__(self, settings: Settings, job: Job, ledger: ChunkLedger, threads: ChunkThreads | None) -> None:
        self.settings, self.job, self.ledger, self.threads = settings, job, ledger, threads

    def check(self, chunk: RecordCheck, committed: bool) -> Pending[DatabaseFacts]:
        job = self.job
        return self._run(
            lambda: database_facts(self.settings, job.scope, job.resource, chunk, committed),
            f"check of chunk {chunk.index}",
        )

    def decide(self, chunk: RecordCheck, checked: DatabaseFacts, seen: SeenKeys) -> CheckedChunk:
        return decide(self.job.resource, chunk, checked, seen, self.job.mode)

    def load(self, chunk: RecordCheck, decided: CheckedChunk) -> Pending[ChunkResult]:
        return self._run(
            lambda: apply_chunk(self.settings, self.ledger, self.job.resource, decided), f"load of chunk {chunk.index}"
        )

    def accepted(self, decided: CheckedChunk) -> int:
        return decided.rows.height

    def accepted_rows(self, decided: CheckedChunk) -> pl.DataFrame:
        return decided.rows

    def _run(self, call: Callable[[], T], what: str) -> Pending[T]:
        if self.threads is None:
            return Done(with_chunk_retries(call, what))
        return self.threads.submit(call, what)


class OnWorkerSteps(Steps[ChunkSpan, ChunkKeys, KeyDecision]):
    """Dask: a chunk is a span of `file`; the workers read it, the flow sees its keys."""

    def __init__(
        self, settings: Settings, job: Job, ledger: ChunkLedger, file: SharedFile, runner: TaskRunner[Any]
    ) -> None:
        self.settings, self.job, self.ledger, self.file, self.runner = settings, job, ledger, file, runner

    def check(self, chunk: ChunkSpan, committed: bool) -> PrefectFuture[ChunkKeys]:
        checks = {"committed": committed, "scope": self.job.scope}
        return self.runner.submit(check_span, self._parameters(chunk) | checks)

    def decide(self, chunk: ChunkSpan, checked: ChunkKeys, seen: SeenKeys) -> KeyDecision:
        return decide_keys(self.job.resource, checked, seen, self.job.mode)

    def load(self, chunk: ChunkSpan, decided: KeyDecision) -> PrefectFuture[ChunkResult]:
        return self.runner.submit(load_span, self._parameters(chunk) | {"decision": decided, "ledger": self.ledger})

    def accepted(self, decided: KeyDecision) -> int:
        return int(decided.outcome.get_column(ACCEPTED).sum())

    def _parameters(self, span: ChunkSpan) -> dict[str, Any]:
        job = self.job
        return {"settings": self.settings, "resource": job.resource, "file": self.file, "span": span}
