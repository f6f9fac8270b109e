"""/v1/imports: upload a file or give a URL, poll the job, stream its rejects."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from api.deps import AppHistoryQuery, AppRuns, AppSettings
from api.errors import RESOURCE_NAMES, ApiError
from api.jobs import public_location, public_text, read_job
from api.models import ALIASES, Accepted, ImportFromUrl, ImportJob
from bulkflow.settings import Settings
from files.formats import detect_format, display_name
from files.remote import check_remote_url, check_size
from schemas import RESOURCES, get_resource
from schemas.parameters import FORMATS, FileOptions, ImportOptions
from schemas.reports import ImportHistoryEntry, JobTotals
from tasks.history import list_imports
from tasks.jobs import RunCounts, find_job_key, iter_rejects, read_rejects, run_counts
from tasks.landing import store_upload
from tasks.run_labels import import_run_name
from tasks.runs import IMPORT

router = APIRouter(prefix="/imports", tags=["imports"])


def _form_fields(model: type[BaseModel]) -> dict[str, Any]:
    """The model's fields as form fields. An optional one ("a number or null") becomes its
    type with an empty default: Swagger UI fills a field from its default, else its
    example or minimum (a form sent as is would then ask for a budget of 0 rejects)."""
    fields = {}
    for name, schema in model.model_json_schema()["properties"].items():
        choices = [choice for choice in schema.get("anyOf", ()) if choice.get("type") != "null"]
        if len(choices) == 1:
            schema = {**choices[0], "description": schema.get("description", ""), "default": ""}
        if schema.get("type") in ("array", "object"):  # a form field is text: `NULL,N/A`, `Email Address=email`
            schema = {"type": "string", "description": schema.get("description", ""), "default": ""}
        fields[name] = schema
    return fields


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "resource"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "resource": {
                            "type": "string",
                            "enum": list(RESOURCES),
                            "description": "Also accepted as `resource_type`.",
                            "x-aliases": list(ALIASES["resource"]),
                        },
                        # Optional with an empty default: Swagger UI fills a form from each field's
                        # example or default, else its first choice (an NDJSON file read as CSV).
                        "format": {
                            "type": "string",
                            "enum": list(FORMATS),
                            "default": "",
                            "description": "Default (empty): from the file's name.",
                        },
                        **_form_fields(FileOptions),
                    },
                }
            },
            "application/json": {"schema": ImportFromUrl.model_json_schema()},
        },
    }
}


@router.post("", status_code=202, response_model=Accepted, openapi_extra=_UPLOAD_BODY)
async def create_import(
    request: Request,
    settings: AppSettings,
    runs: AppRuns,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> Accepted:
    """Start an import of an uploaded file (multipart) or of a URL (JSON, or a form's `url`
    field). The same `Idempotency-Key` returns the same job. Fields also go by the names
    other clients of this API send: `resource_type` for `resource`, `file_url` for `url`."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        resource, source, fmt, name, control = await _receive_form(request, settings)
        rejects_of = None
    elif content_type.startswith("application/json"):
        body = await _json_body(request)
        if body.rejects_of:
            resource, source, fmt = body.resource, "", None
        else:
            resource, source, fmt = await run_in_threadpool(_check_url_request, body, settings)
        name, control, rejects_of = None, _control_of(body), body.rejects_of
    else:
        raise ApiError(
            415, "unsupported_media_type", "send multipart/form-data (file, resource) or JSON (resource, url)"
        )
    options = ImportOptions(
        **control.model_dump(exclude_unset=True),
        idempotency_key=idempotency_key,
        source_name=name,
        rejects_of=rejects_of,
    )
    parameters = {"resource": resource, "source": source, "format": fmt, "options": options.model_dump()}
    run_name = import_run_name(resource, source, options.given_name)
    job = await run_in_threadpool(runs.trigger, IMPORT, parameters, "import", idempotency_key, run_name)
    return Accepted(
        job_id=job.job_id, status=job.status, status_url=str(request.url_for("import_status", job_id=job.job_id))
    )


async def _json_body(request: Request) -> ImportFromUrl:
    body = await request.body()
    try:
        return ImportFromUrl.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(), body=_as_object(body)) from None


def _as_object(body: bytes) -> dict[str, Any]:
    """The body's fields when it is a JSON object (to name what an unknown value should be)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _control_of(fields: BaseModel | dict[str, str]) -> FileOptions:
    """The file options (how it is read and written) a request's body or form sets (its
    other fields left out)."""
    given = fields.model_dump(exclude_unset=True) if isinstance(fields, BaseModel) else fields
    chosen = {name: value for name, value in given.items() if name in FileOptions.model_fields}
    try:
        return FileOptions.model_validate(chosen)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(), body=chosen) from None


def _check_url_request(body: ImportFromUrl, settings: Settings) -> tuple[str, str, str | None]:
    url = body.url or ""  # a body without one replays rejects (`rejects_of`)
    check_remote_url(url, settings)
    detect_format(url, body.format)
    return body.resource, url, body.format


async def _receive_form(request: Request, settings: Settings) -> tuple[str, str, str | None, str | None, FileOptions]:
    """(resource, source, format, the file's original name, file options) of a form: an
    uploaded file, stored first, or a URL (`url` or `file_url`) imported as a JSON body's
    would be."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        check_size(int(declared), "the upload", settings.max_source_bytes)
    try:
        form = await MultiPartParser(
            request.headers,
            _limited(request.stream(), settings.max_source_bytes),
            max_files=1,
            max_fields=6 + len(FileOptions.model_fields),
        ).parse()
    except MultiPartException as exc:
        raise ApiError(400, "invalid_upload", f"cannot read the multipart body: {exc.message}") from None
    try:
        upload = form.get("file")
        fields = {key: value for key, value in form.items() if isinstance(value, str) and value}
        if not isinstance(upload, UploadFile):
            if not any(name in fields for name in ("url", *ALIASES["url"])):
                raise ApiError(422, "invalid_request", "a multipart import needs the fields file and resource (or url)")
            try:
                body = ImportFromUrl.model_validate(fields)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors(), body=fields) from None
            return (*await run_in_threadpool(_check_url_request, body, settings), None, _control_of(body))
        resource = next((fields[name] for name in RESOURCE_NAMES if name in fields), None)
        if resource is None:
            raise ApiError(422, "invalid_request", "a multipart import needs the fields file and resource")
        fmt = fields.get("format")
        get_resource(resource)
        control = _control_of(fields)  # before the upload is stored: a bad field stores nothing
        location = await run_in_threadpool(store_upload, settings, upload.file, upload.filename or "upload", fmt)
    finally:
        await form.close()
    return resource, location, fmt, upload.filename, control


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        check_size(size, "the upload", limit)
        yield chunk


def _source_name(parameters: dict[str, Any]) -> str | None:
    """The file's name as its sender knows it (an upload keeps its original name)."""
    source = parameters.get("source")
    given = ImportOptions.of(parameters.get("options")).given_name
    return display_name(str(source), given) if source else given


def _user_error(message: str | None, parameters: dict[str, Any]) -> str | None:
    """A failed job's message, naming the file as its sender knows it (not the stored copy)."""
    source, name = parameters.get("source"), _source_name(parameters)
    if message and source and name:
        return message.replace(str(source), name)
    return public_text(message, source)


@router.get("", response_model=list[ImportHistoryEntry])
def import_history(settings: AppSettings, query: AppHistoryQuery) -> list[ImportHistoryEntry]:
    """The load history: every import run, newest first, as `bulkflow history --json` lists it."""
    return list_imports(settings, query)


@router.get("/{job_id}", response_model=ImportJob, name="import_status")
def import_status(job_id: str, request: Request, settings: AppSettings) -> ImportJob:
    """The job's status and counters (running totals while it runs), and a sample of rejects."""
    run = read_job(job_id, "import")
    job_key = find_job_key(settings, job_id)
    counts = RunCounts(own=JobTotals(), job=JobTotals(), committed_by=[])
    sample: list[dict[str, Any]] = []
    if job_key is not None:
        counts = run_counts(settings, job_key, job_id)
        sample = read_rejects(settings, job_key, limit=settings.reject_sample_size).drop("raw").to_dicts()
    rows_per_s = counts.rows_read / run.duration_s if run.duration_s else None
    options = ImportOptions.of(run.parameters.get("options"))
    return ImportJob(
        **counts.report_fields(),
        chunks_committed=counts.own.chunks,
        job_id=job_id,
        status=run.status,
        resource=run.parameters.get("resource"),
        source=public_location(run.parameters.get("source")),
        source_name=_source_name(run.parameters),
        mode=options.mode,
        dry_run=options.dry_run,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_s=run.duration_s,
        rows_per_s=round(rows_per_s, 1) if rows_per_s is not None else None,
        error=_user_error(run.message, run.parameters),
        retryable=run.retryable,
        rejects_sample=sample,
        rejects_url=str(request.url_for("import_rejects", job_id=job_id)),
    )


@router.get(
    "/{job_id}/rejects",
    name="import_rejects",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "one reject entry per line"}},
)
def import_rejects(job_id: str, settings: AppSettings) -> StreamingResponse:
    """Every reject entry of the job (line, field, rule, message, value, raw), as NDJSON."""
    read_job(job_id, "import")
    job_key = find_job_key(settings, job_id)
    return StreamingResponse(_rejects_ndjson(settings, job_key), media_type="application/x-ndjson")


def _rejects_ndjson(settings: Settings, job_key: str | None) -> Iterator[bytes]:
    if job_key is None:
        return
    for frame in iter_rejects(settings, job_key):
        yield frame.write_ndjson().encode()
