"""Async exports: write to storage through fsspec, keep a manifest, look a job up by run id
(its status is the flow run's state, which Prefect holds)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from prefect import task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from bulkflow.db import execute, query_one
from bulkflow.errors import retry_condition
from bulkflow.settings import Settings
from decisions.exports import ExportRequest
from files.storage import open_file
from schemas.reports import ExportManifest
from tasks.export import stream_export
from tasks.report import artifact_key

MANIFEST_SUFFIX = ".manifest.json"


def export_location(request: ExportRequest, run_id: str, root: str) -> str:
    """Storage path of an export under `root`: named after the flow run, so a retry
    overwrites, never duplicates."""
    return f"{root}/{request.resource.name}-{run_id}.{request.format}"


@task(
    name="write-export",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_condition,
    cache_policy=NO_CACHE,
)
def write_export(request: ExportRequest, run_id: str, settings: Settings) -> ExportManifest:
    """Stream the export to storage, then record and return its manifest."""
    location = export_location(request, run_id, settings.export_root())
    _record_start(settings, request, run_id, location)
    with open_file(settings, location, "wb", auto_mkdir=True) as sink:
        stats = stream_export(request, sink, settings=settings, digest=True)
    manifest = ExportManifest(
        job_id=run_id,
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
    )
    with open_file(settings, location + MANIFEST_SUFFIX, "w") as fh:
        fh.write(manifest.model_dump_json(indent=2))
    _record_finish(settings, manifest)
    get_run_logger().info(
        "exported %d %s rows as %s: %d bytes in %.2fs (%.0f rows/s) to %s",
        stats.rows,
        request.resource.name,
        request.format,
        stats.bytes,
        stats.duration_s,
        stats.rows_per_s,
        location,
    )
    return manifest


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


def _record_start(settings: Settings, request: ExportRequest, run_id: str, location: str) -> None:
    execute(
        settings,
        "INSERT INTO export_jobs (flow_run_id, resource, format, filters, fields, row_limit, location) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (flow_run_id) DO NOTHING",
        (
            run_id,
            request.resource.name,
            request.format,
            json.dumps(request.filters),
            json.dumps(list(request.fields)),
            request.limit,
            location,
        ),
    )


def _record_finish(settings: Settings, manifest: ExportManifest) -> None:
    execute(
        settings,
        "UPDATE export_jobs SET rows = $2, bytes = $3, sha256 = $4, duration_s = $5, finished_at = now() "
        "WHERE flow_run_id = $1",
        (manifest.job_id, manifest.rows, manifest.bytes, manifest.sha256, manifest.duration_s),
    )


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
        settings,
        "SELECT resource, format, filters, fields, row_limit, location, rows, bytes, sha256, duration_s, finished_at "
        "FROM export_jobs WHERE flow_run_id = $1",
        (job_id,),
    )
    if row is None:
        return None
    resource, fmt, filters, fields, limit, location, rows, size, sha256, duration, finished = row
    manifest = None
    if finished is not None:
        manifest = ExportManifest(
            job_id=job_id,
            resource=resource,
            format=fmt,
            filters=json.loads(filters),
            fields=json.loads(fields),
            limit=limit,
            rows=rows,
            bytes=size,
            sha256=sha256,
            duration_s=duration,
            rows_per_s=round(rows / duration, 1) if duration else 0.0,
            location=location,
        )
    return RecordedExport(resource, fmt, location, manifest)
