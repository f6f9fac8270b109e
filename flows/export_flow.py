"""Export flows: only wiring. The streaming core lives in `tasks/export.py`."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import cast

from prefect import tags
from prefect.logging import get_run_logger
from prefect.runtime import deployment, flow_run

from bulkflow.console import quiet_tracebacks
from bulkflow.errors import CursorExpired
from bulkflow.settings import Settings
from decisions.exports import ExportFormat, plan_export
from schemas import RESOURCES
from schemas.parameters import ExportFilters, ResourceName, filter_values
from schemas.reports import ExportManifest
from schemas.resource import RuleContext
from tasks import events
from tasks.export_jobs import prune_kept_history, publish_export, record_export_failure, resume_from, write_export
from tasks.prefect_defaults import flow
from tasks.run_labels import VIA_PREFIX, export_run_name, label_run


def _export_name() -> str:
    return export_run_name(str(flow_run.parameters["resource"]), str(flow_run.parameters["format"]))


@flow(
    name="export", flow_run_name=_export_name, validate_parameters=True, persist_result=True, result_serializer="json"
)
def export_flow(
    resource: ResourceName,
    format: ExportFormat = "parquet",
    filters: ExportFilters | None = None,  # type: ignore[valid-type]  # a model declared at run time
    fields: list[str] | None = None,
    limit: int | None = None,
    since: str | None = None,
    cursor_name: str | None = None,
    partition_by: str | None = None,
) -> ExportManifest:
    """Export `resource` to storage (BULKFLOW_EXPORT_URL) and return the manifest. Emits
    `bulkflow.export.completed` (or `.failed`) for automations.

    Args:
        resource: What to export: users, articles or comments.
        format: parquet, csv, ndjson or json.
        filters: Only the rows matching every filter set (role, status, ranges of time...).
        fields: The columns to write, in order. Leave empty for all of them.
        limit: The most rows to write (the first ones by id). Leave empty for all of them.
        since: A cursor (an earlier export's manifest `cursor`): only the rows changed and
            deleted since. Leave empty for a full export.
        cursor_name: Keep the cursor in the database under this name and start from the one
            kept there: the changes since the last successful run (a full export the first
            time, and every BULKFLOW_FULL_EVERY_DAYS). Leave empty to keep none.
        partition_by: Write a Parquet dataset, a folder per value: created_at:day (or
            :month, :year) or a column such as role. Leave empty for one file.
    """
    quiet_tracebacks()  # the run's console shows its error in one line; the API keeps the traceback
    settings = Settings()
    via = label_run(resource)
    try:
        if cursor_name is not None:
            since = resume_from(settings, cursor_name, resource, since, limit)
        request = plan_export(
            resource,
            format,
            filter_values(filters),
            fields,
            context=RuleContext.of(settings),
            limit=limit,
            since=since,
            partition_by=partition_by,
        )
        with events.alive():
            try:
                manifest = write_export(request, str(flow_run.id), settings, via.removeprefix(VIA_PREFIX), cursor_name)
            except CursorExpired as expired:
                if cursor_name is None:
                    raise
                get_run_logger().warning("a full export of %s instead: %s", resource, expired)
                full = replace(request, since=None)
                manifest = write_export(full, str(flow_run.id), settings, via.removeprefix(VIA_PREFIX), cursor_name)
    except BaseException as error:
        record_export_failure(settings, str(flow_run.id), error)
        events.export_failed(resource, format, error)
        raise
    publish_export(manifest)
    events.export_completed(manifest)
    return manifest


def _nightly_name() -> str:
    return f"nightly-{datetime.now(UTC):%Y-%m-%d}"


@flow(
    name="nightly-export",
    flow_run_name=_nightly_name,
    validate_parameters=True,
    persist_result=True,
    result_serializer="json",
)
def nightly_export(
    format: ExportFormat = "parquet", partition_by: dict[ResourceName, str] | None = None
) -> list[ExportManifest]:
    """The changes of every resource since the last successful run, deletes included (a
    full snapshot the first time and every BULKFLOW_FULL_EVERY_DAYS), each resource's cursor
    kept under the deployment's name; then the tombstones and the load history past their
    days are pruned. A failed export leaves its cursor where it was.

    Args:
        format: parquet, csv, ndjson or json.
        partition_by: A Parquet dataset for these resources, a folder per value, e.g.
            {"users": "created_at:month"}. Leave empty for one file per resource.
    """
    quiet_tracebacks()
    name = deployment.name or "nightly-export"
    with tags(label_run(None)), events.alive():
        manifests = [
            export_flow(
                resource=cast(ResourceName, resource),
                format=format,
                cursor_name=name,
                partition_by=(partition_by or {}).get(cast(ResourceName, resource)),
            )
            for resource in RESOURCES
        ]
        prune_kept_history(Settings())
    return manifests
