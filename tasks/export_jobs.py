"""Async exports: write to storage through fsspec, keep a manifest, look a job up by run id
(its status is the flow run's state, which Prefect holds)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_logger, get_run_logger

from bulkflow.db import connect, execute, query_one
from bulkflow.errors import ParameterError, first_line, retry_condition
from bulkflow.settings import Settings
from decisions.cursors import KeptCursor, starting_point
from decisions.exports import ExportRequest, deletes_location
from decisions.sql import PRUNE_HISTORY_SQL, PRUNE_TOMBSTONES_SQL
from files.storage import open_file, remove_tree
from files.writers import Written
from schemas.reports import ExportFile, ExportManifest
from tasks.export import open_export
from tasks.report import artifact_key

MANIFEST_SUFFIX = ".manifest.json"


def export_location(request: ExportRequest, run_id: str, root: str, cursor_name: str | None = None) -> str:
    """Storage path of an export under `root`: named after the flow run, so a retry
    overwrites, never duplicates. An export that keeps its cursor under `cursor_name` is
    named after where it starts instead (`<root>/<name>/users-since-<digest>.parquet`, or
    `users-full-<date>`): a re-run after a failure (the cursor unmoved) writes the same file.
    A partitioned dataset is a directory of that name, without the suffix."""
    suffix = "" if request.partitioning else f".{request.format}"  # a dataset is a directory
    if cursor_name is None:
        return f"{root}/{request.resource.name}-{run_id}{suffix}"
    if request.since is None:
        start = f"full-{datetime.now(UTC):%Y-%m-%d}"
    else:
        start = "since-" + hashlib.sha256(request.since.token.encode()).hexdigest()[:16]
    return f"{root}/{cursor_name}/{request.resource.name}-{start}{suffix}"


@task(
    name="write-export",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_condition,
    cache_policy=NO_CACHE,
)
def write_export(
    request: ExportRequest, run_id: str, settings: Settings, via: str | None = None, cursor_name: str | None = None
) -> ExportManifest:
    """Stream the export to storage (an incremental CSV or Parquet export's deletes to a file
    beside it), then record and return its manifest; with `cursor_name`, its cursor is kept
    under that name in the same transaction as the manifest (a failed export moves nothing)."""
    location = export_location(request, run_id, settings.export_root(), cursor_name)
    _record_start(settings, request, run_id, location, via)
    if request.partitioning is not None:
        remove_tree(settings, location)  # what an earlier attempt wrote: its partitions may not be this one's
    manifest = export_to_storage(request, location, settings, run_id, cursor_name)
    _record_finish(settings, manifest)
    get_run_logger().info(
        "exported %d %s rows%s as %s: %d bytes in %.2fs (%.0f rows/s) to %s%s",
        manifest.rows,
        request.resource.name,
        f" and {manifest.deleted} deletes" if request.since else "",
        request.format,
        manifest.bytes,
        manifest.duration_s,
        manifest.rows_per_s,
        location,
        f" ({len(manifest.files)} files)" if request.partitioning else "",
    )
    return manifest


def export_to_storage(
    request: ExportRequest,
    location: str,
    settings: Settings,
    job_id: str | None = None,
    cursor_name: str | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> ExportManifest:
    """Write the export to `location` (a file, or a partitioned dataset's directory), an
    incremental CSV or Parquet export's deletes beside it, then its manifest beside it
    (`<location>.manifest.json`), and return the manifest."""
    deletes_at = deletes_location(location, request.format) if request.deletes_apart else None
    with ExitStack() as files, open_export(request, settings) as export:
        deletes = files.enter_context(open_file(settings, deletes_at, "wb", auto_mkdir=True)) if deletes_at else None
        if request.partitioning is not None:
            stats = export.write_dataset(
                lambda path: open_file(settings, f"{location}/{path}", "wb", auto_mkdir=True),
                deletes=deletes,
                digest=True,
                on_rows=on_rows,
            )
        else:
            sink = files.enter_context(open_file(settings, location, "wb", auto_mkdir=True))
            stats = export.write(sink, deletes=deletes, digest=True, on_rows=on_rows)
    manifest = ExportManifest(
        job_id=job_id,
        resource=request.resource.name,
        format=request.format,
        filters=request.filters,
        fields=list(request.fields),
        limit=request.limit,
        rows=stats.rows,
        bytes=stats.bytes,
        sha256=stats.sha256 or "",
        duration_s=stats.duration_s,
        rows_per_s=stats.rows_per_s,
        connections=stats.connections,
        location=location,
        partition_by=request.partitioning.spec if request.partitioning else None,
        files=[_listed(f"{location}/{path}", written) for path, written in stats.files],
        since=request.since.token if request.since else None,
        cursor=stats.cursor,
        deleted=stats.deleted,
        deletes=_listed(deletes_at, stats.deletes) if deletes_at and stats.deletes else None,
        cursor_name=cursor_name,
    )
    with open_file(settings, location + MANIFEST_SUFFIX, "w") as fh:
        fh.write(manifest.model_dump_json(indent=2))
    return manifest


def _listed(location: str, written: Written) -> ExportFile:
    return ExportFile(location=location, rows=written.rows, bytes=written.bytes, sha256=written.sha256 or "")


def publish_export(manifest: ExportManifest) -> None:
    """A link artifact to the file and a table artifact with the manifest."""
    key = artifact_key("export", manifest.resource, manifest.format)
    create_link_artifact(link=manifest.location, link_text=manifest.location, key=key + "-file")
    create_table_artifact(
        table=[
            {"field": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else str(v)}
            for k, v in manifest.model_dump().items()
        ],
        key=key + "-manifest",
        description=f"Export of {manifest.resource} as {manifest.format}",
    )


def _record_start(settings: Settings, request: ExportRequest, run_id: str, location: str, via: str | None) -> None:
    execute(
        settings,
        "INSERT INTO export_jobs (flow_run_id, resource, format, filters, fields, row_limit, location, since, "
        "started_via) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (flow_run_id) DO UPDATE SET "
        "failed_at = NULL, failure_message = NULL",
        (
            run_id,
            request.resource.name,
            request.format,
            json.dumps(request.filters),
            json.dumps(list(request.fields)),
            request.limit,
            location,
            request.since.token if request.since else None,
            via,
        ),
    )


def _record_finish(settings: Settings, manifest: ExportManifest) -> None:
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(
            "UPDATE export_jobs SET rows = $2, bytes = $3, sha256 = $4, duration_s = $5, manifest = $6::jsonb, "
            "cursor_name = $7, finished_at = now() WHERE flow_run_id = $1",
            parameters=(
                manifest.job_id,
                manifest.rows,
                manifest.bytes,
                manifest.sha256,
                manifest.duration_s,
                manifest.model_dump_json(),
                manifest.cursor_name,
            ),
        )
        if manifest.cursor_name is not None and manifest.cursor is not None:
            cur.execute(
                "INSERT INTO export_cursors (name, resource, cursor, full_at, flow_run_id) "
                "VALUES ($1, $2, $3, now(), $4) ON CONFLICT (name, resource) DO UPDATE SET cursor = EXCLUDED.cursor, "
                "flow_run_id = EXCLUDED.flow_run_id, updated_at = now(), "
                "full_at = CASE WHEN $5 THEN now() ELSE export_cursors.full_at END",
                parameters=(
                    manifest.cursor_name,
                    manifest.resource,
                    manifest.cursor,
                    manifest.job_id,
                    manifest.since is None,
                ),
            )
        conn.commit()


def kept_cursor(settings: Settings, name: str, resource: str) -> KeptCursor | None:
    """The cursor kept under `name` for `resource` by its last successful export, if any."""
    row = query_one(
        settings, "SELECT cursor, full_at FROM export_cursors WHERE name = $1 AND resource = $2", (name, resource)
    )
    return KeptCursor(row[0], row[1]) if row else None


def record_export_failure(settings: Settings, run_id: str, error: BaseException) -> None:
    """Keep how an export job failed, for the history (nothing when it never started). Best
    effort: the run fails with its own error, even when the database is the reason."""
    try:
        execute(
            settings,
            "UPDATE export_jobs SET failed_at = now(), failure_message = $2 "
            "WHERE flow_run_id = $1 AND finished_at IS NULL",
            (run_id, first_line(error)),
        )
    except Exception as unrecorded:  # noqa: BLE001 - the run's own error is the one to raise
        get_logger(__name__).warning("could not record the failure of export %s: %s", run_id, first_line(unrecorded))


@dataclass(frozen=True)
class RecordedExport:
    """What an export job recorded: where its file goes, and its manifest once written."""

    resource: str
    format: str
    location: str
    manifest: ExportManifest | None


def find_export(settings: Settings, job_id: str) -> RecordedExport | None:
    """The export job with this flow run id (manifest None while it runs); None when no
    export run has started under that id."""
    row = query_one(
        settings, "SELECT resource, format, location, manifest FROM export_jobs WHERE flow_run_id = $1", (job_id,)
    )
    if row is None:
        return None
    resource, fmt, location, manifest = row
    return RecordedExport(resource, fmt, location, ExportManifest.model_validate_json(manifest) if manifest else None)


def resume_from(settings: Settings, name: str, resource: str, since: str | None, limit: int | None) -> str | None:
    """The cursor an export keeping its cursor under `name` starts from (None: a full
    export), logged with why. It carries its cursor forward, so it takes every row and no
    cursor of its own."""
    if since is not None or limit is not None:
        raise ParameterError("an export that keeps its cursor (cursor_name) takes neither since nor limit")
    now = datetime.now(UTC)
    start, why = starting_point(kept_cursor(settings, name, resource), now, settings.full_every_days)
    get_run_logger().info("export of %s under cursor name %s: %s", resource, name, why)
    return start


@task(
    name="prune-history",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_condition,
)
def prune_kept_history(settings: Settings) -> None:
    """Forget tombstones and truncations older than BULKFLOW_TOMBSTONE_DAYS, and imports and
    exports older than BULKFLOW_HISTORY_DAYS (with their chunks, rejects and runs)."""
    with connect(settings) as conn, conn.cursor() as cur:
        for statement in PRUNE_TOMBSTONES_SQL:
            cur.execute(statement, parameters=(settings.tombstone_days,))
        for statement in PRUNE_HISTORY_SQL:
            cur.execute(statement, parameters=(settings.history_days,))
        conn.commit()
