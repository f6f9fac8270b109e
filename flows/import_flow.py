"""The import flow: only wiring. Reading, checking and loading live in `tasks/`."""

from __future__ import annotations

import time
from collections import deque

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from bulkflow.errors import InputError
from bulkflow.settings import get_settings
from schemas import get_resource
from schemas.parameters import ImportOptions, ResourceName
from schemas.resource import Resource, RuleContext
from tasks.jobs import close_job, open_job, read_rejects
from tasks.load import ChunkResult, load_chunk
from tasks.read import read_chunks
from tasks.report import ImportProgress, publish_report
from tasks.source import Format, StagedSource, read_columns, stage_source
from tasks.validate import SeenKeys, check_chunk


@task(name="stage-source", cache_policy=NO_CACHE, persist_result=False)
def stage(resource: Resource, source: str, format: Format | None) -> StagedSource:
    """Fetch/decompress/check the source and verify its columns."""
    staged = stage_source(source, format)
    try:
        columns = read_columns(staged)
        missing = [c for c in resource.required_columns if c not in columns]
        if missing:
            raise InputError(
                f"{source} lacks required column(s) {', '.join(missing)} for {resource.name} "
                f"(found: {', '.join(columns) or 'none'}; expected: {', '.join(resource.field_names)})"
            )
        unknown = [c for c in columns if c not in resource.field_names]
        if unknown:
            get_run_logger().warning("ignoring columns %s not in %s", ", ".join(unknown), resource.name)
        return staged
    except BaseException:
        staged.cleanup()
        raise


@flow(
    name="import",
    flow_run_name="import-{resource}",
    task_runner=ThreadPoolTaskRunner(max_workers=get_settings().load_workers),
    validate_parameters=True,
)
def import_flow(
    resource: ResourceName,
    source: str,
    format: Format | None = None,
    options: ImportOptions = ImportOptions(),
) -> dict[str, object]:
    """Import `source` into `resource`: every row inserted, updated or rejected, exactly once.

    Re-running with the same content (or the same `options.idempotency_key`) skips the chunks
    that earlier runs committed. Returns the report: rows_read, inserted, updated, rejected...
    """
    started = time.perf_counter()
    settings = get_settings()
    definition = get_resource(resource)
    staged = stage(definition, source, format)
    run_id = str(flow_run.id) if flow_run.id else None
    job = open_job(resource, staged, options.chunk_size or settings.chunk_size, options.idempotency_key, run_id)
    progress = ImportProgress(resource, source)
    context = RuleContext(allowed_roles=settings.allowed_roles)
    seen = SeenKeys()
    in_flight: deque[tuple[PrefectFuture[ChunkResult], float, float]] = deque()
    skipped = 0
    for index, batch in enumerate(read_chunks(staged, definition, job.chunk_size)):
        # Every chunk is checked, committed or not, so in-file duplicates are judged the same.
        checked = check_chunk(definition, context, index, batch.rows, seen)
        if index in job.done_chunks:
            skipped += 1
            progress.skipped(checked.rows_read, batch.progress)
            continue
        future = load_chunk.submit(job.key, definition, checked)
        in_flight.append((future, time.perf_counter(), batch.progress))
        while len(in_flight) > settings.load_workers:
            _finish_oldest(in_flight, progress)
    while in_flight:
        _finish_oldest(in_flight, progress)
    report = close_job(job, staged, run_id, time.perf_counter() - started, skipped)
    sample = read_rejects(job.key, limit=settings.reject_sample_size).drop("raw").to_dicts()
    publish_report(report, sample)
    staged.cleanup()
    if not report.invariant_holds:
        raise RuntimeError(
            f"invariant broken: inserted {report.inserted} + updated {report.updated} + "
            f"rejected {report.rejected} != rows read {report.rows_read}"
        )
    return report.__dict__


def _finish_oldest(in_flight: deque, progress: ImportProgress) -> None:
    future, submitted, fraction = in_flight.popleft()
    progress.chunk_done(future.result(), time.perf_counter() - submitted, fraction)
