"""/v1/exports: stream a slice now, or start an export job and download its file later."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import IO, Annotated, Any, Optional, cast
from urllib.parse import quote

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, create_model

from api.deps import AppHistoryQuery, AppRuns, AppSettings
from api.errors import ApiError
from api.jobs import public_location, public_text, read_job
from api.models import Accepted, ExportJob, ExportJobRequest, aliased
from api.streaming import stream_writer
from bulkflow.settings import Settings
from decisions.exports import CONTENT_TYPES, ExportFormat, plan_export, refuse_one_stream
from files.remote import is_remote
from files.storage import open_file, signed_url
from schemas.parameters import ExportFilters, ResourceName, filter_values
from schemas.reports import ExportHistoryEntry, ExportManifest
from schemas.resource import RuleContext
from tasks.export import open_export
from tasks.export_jobs import find_export
from tasks.history import list_exports
from tasks.run_labels import export_run_name
from tasks.runs import EXPORT

router = APIRouter(prefix="/exports", tags=["exports"])
_BLOCK = 1 << 20

_QUERY_FIELDS: dict[str, Any] = {
    "resource": (ResourceName, aliased("resource", description="users, articles or comments.")),
    "format": (ExportFormat, Field(default="ndjson")),
    "fields": (Optional[str], Field(default=None, description="comma-separated fields, default all")),
    "limit": (Optional[int], Field(default=None, description="the most rows to return (the first ones by id)")),
    "since": (
        Optional[str],
        Field(default=None, description="a cursor (an earlier export's X-Bulkflow-Cursor): only what changed since"),
    ),
    "partition_by": (
        Optional[str],
        Field(default=None, description="refused here: a partitioned dataset is many files, an export job's (POST)"),
    ),
}
# Declared at run time on top of the resources' filters: to the type checker, a BaseModel.
ExportQuery: type[BaseModel] = create_model("ExportQuery", __base__=ExportFilters, **_QUERY_FIELDS)
_NOT_FILTERS = set(_QUERY_FIELDS)
CURSOR_HEADER = "X-Bulkflow-Cursor"
_STREAMED: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {media: {} for media in CONTENT_TYPES.values()},
        "description": "the rows, ordered by id (with `since`: the rows changed since, then the deletes as "
        '`{"id": ..., "_deleted": true, "_deleted_at": ...}`)',
        "headers": {
            CURSOR_HEADER: {"description": "the cursor to pass as `since` next time", "schema": {"type": "string"}}
        },
    }
}


@router.get("", response_class=StreamingResponse, responses=_STREAMED)
def export_stream(query: Annotated[ExportQuery, Query()], settings: AppSettings) -> StreamingResponse:  # type: ignore[valid-type]  # a model declared at run time
    """Stream the rows (filters and fields checked first), in constant memory."""
    values = cast(BaseModel, query).model_dump(exclude_none=True)
    filters = {k: v for k, v in values.items() if k not in _NOT_FILTERS}
    listed = values.get("fields")
    fields = [f.strip() for f in listed.split(",") if f.strip()] if listed else None
    export = plan_export(
        values["resource"],
        values["format"],
        filters,
        fields,
        context=RuleContext.of(settings),
        limit=values.get("limit"),
        since=values.get("since"),
        partition_by=values.get("partition_by"),
    )
    refuse_one_stream(export)
    opened = ExitStack()
    view = opened.enter_context(open_export(export, settings))  # the cursor is a header: known before the rows

    def write(sink: IO[bytes]) -> object:
        with opened:
            return view.write(sink)

    headers = {"Content-Disposition": f'attachment; filename="{export.resource.name}.{export.format}"'}
    if view.cursor is not None:
        headers[CURSOR_HEADER] = view.cursor
    return StreamingResponse(stream_writer(write), media_type=CONTENT_TYPES[export.format], headers=headers)


@router.post("", status_code=202, response_model=Accepted)
def create_export(
    body: ExportJobRequest,
    request: Request,
    settings: AppSettings,
    runs: AppRuns,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> Accepted:
    """Start an export job writing to storage; poll its status URL for the download link."""
    filters = filter_values(body.filters)
    # Refuse bad parameters now, not in the run.
    plan_export(
        body.resource,
        body.format,
        filters,
        body.fields,
        context=RuleContext.of(settings),
        limit=body.limit,
        since=body.since,
        partition_by=body.partition_by,
    )
    parameters = {
        "resource": body.resource,
        "format": body.format,
        "filters": filters,
        "fields": body.fields,
        "limit": body.limit,
        "since": body.since,
        "partition_by": body.partition_by,
    }
    job = runs.trigger(EXPORT, parameters, "export", idempotency_key, export_run_name(body.resource, body.format))
    return Accepted(
        job_id=job.job_id, status=job.status, status_url=str(request.url_for("export_status", job_id=job.job_id))
    )


@router.get("/history", response_model=list[ExportHistoryEntry])
def export_history(settings: AppSettings, query: AppHistoryQuery) -> list[ExportHistoryEntry]:
    """Every export job, newest first, as `bulkflow history --exports --json` lists it (GET
    /v1/exports itself streams an export)."""
    return list_exports(settings, query)


@router.get("/{job_id}", response_model=ExportJob, name="export_status")
def export_status(job_id: str, request: Request, settings: AppSettings) -> ExportJob:
    """The job's status; once completed, its manifest and the download URLs of its files."""
    run = read_job(job_id, "export")
    recorded = find_export(settings, job_id)
    manifest = recorded.manifest if recorded else None
    location = recorded.location if recorded else None
    error = public_text(run.message, location)
    if manifest is None:
        return ExportJob(job_id=job_id, status=run.status, error=error)
    download = str(request.url_for("export_download", job_id=job_id))
    return ExportJob(
        job_id=job_id,
        status=run.status,
        manifest=_public(manifest),
        download_url=None if manifest.partition_by else download,
        file_urls=[f"{download}?file={quote(_in_dataset(manifest, f.location))}" for f in manifest.files],
        deletes_url=f"{download}?file={DELETES_FILE}" if manifest.deletes else None,
        error=error,
    )


DELETES_FILE = "deletes"
"""The `file` of an incremental CSV or Parquet export's deletes."""

_DOWNLOADS: dict[int | str, dict[str, Any]] = {
    **_STREAMED,
    307: {"description": "on object storage: to a URL signed for this request, valid BULKFLOW_DOWNLOAD_URL_TTL s"},
}


@router.get("/{job_id}/download", name="export_download", response_class=StreamingResponse, responses=_DOWNLOADS)
def export_download(
    job_id: str,
    settings: AppSettings,
    file: Annotated[
        Optional[str],
        Query(description="`deletes`, or a partitioned dataset's file by its path in the dataset (`file_urls`)"),
    ] = None,
) -> Response:
    """The export's file: on object storage, a redirect to a URL signed now, for
    BULKFLOW_DOWNLOAD_URL_TTL seconds (never one kept from when it was written); else the
    file, streamed. Which file is looked up in the job's manifest, never taken from the client."""
    read_job(job_id, "export")
    recorded = find_export(settings, job_id)
    if recorded is None or recorded.manifest is None:
        raise ApiError(409, "not_ready", f"export {job_id} has no file yet: poll its status until completed")
    location = _chosen(recorded.manifest, file)
    signed = signed_url(settings, location, settings.download_url_ttl)
    if signed is not None:
        return RedirectResponse(signed, status_code=307, headers={"Cache-Control": "no-store"})
    name = location.rsplit("/", 1)[-1] if file else f"{recorded.resource}-{job_id}.{recorded.format}"
    return StreamingResponse(
        _read_blocks(settings, location),
        media_type=CONTENT_TYPES[recorded.format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _chosen(manifest: ExportManifest, file: str | None) -> str:
    """The location of the file asked for: the export's own, its deletes, or a dataset's."""
    if file is None:
        if manifest.partition_by:
            raise ApiError(
                409,
                "many_files",
                f"export {manifest.job_id} is a dataset of {len(manifest.files)} files: download each with "
                "?file=<its path in the dataset>, as its status's file_urls give them",
            )
        return manifest.location
    if file == DELETES_FILE and manifest.deletes is not None:
        return manifest.deletes.location
    for listed in manifest.files:
        if _in_dataset(manifest, listed.location) == file:
            return listed.location
    raise ApiError(404, "not_found", f"export {manifest.job_id} has no file {file!r}")


def _in_dataset(manifest: ExportManifest, location: str) -> str:
    """A dataset file's path in the dataset (`created_at_day=2024-05-01/part-0000.parquet`)."""
    return location.removeprefix(manifest.location + "/")


def _public(manifest: ExportManifest) -> ExportManifest:
    """The manifest as clients may see it: server paths as names (a dataset's files as the
    dataset's name and their path in it)."""
    dataset = public_location(manifest.location) or ""
    files = [f.model_copy(update={"location": _public_part(manifest, dataset, f.location)}) for f in manifest.files]
    deletes = manifest.deletes
    if deletes is not None:
        deletes = deletes.model_copy(update={"location": public_location(deletes.location)})
    return manifest.model_copy(update={"location": dataset, "files": files, "deletes": deletes})


def _public_part(manifest: ExportManifest, dataset: str, location: str) -> str:
    return location if is_remote(location) else f"{dataset}/{_in_dataset(manifest, location)}"


def _read_blocks(settings: Settings, location: str) -> Iterator[bytes]:
    with open_file(settings, location, "rb") as stream:
        while block := stream.read(_BLOCK):
            yield block
