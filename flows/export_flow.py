"""Export flows: only wiring. The streaming core lives in `tasks/export.py`."""

from __future__ import annotations

from typing import Any, cast

from prefect import flow
from prefect.runtime import flow_run

from bulkflow.settings import Settings
from schemas import RESOURCES
from schemas.parameters import ExportFilters, ResourceName, filter_values
from tasks.export import ExportFormat, plan_export
from tasks.export_jobs import publish_export, write_export


@flow(name="export", flow_run_name="export-{resource}-{format}", validate_parameters=True)
def export_flow(
    resource: ResourceName,
    format: ExportFormat = "parquet",
    filters: ExportFilters | None = None,  # type: ignore[valid-type]  # a model declared at run time
    fields: list[str] | None = None,
) -> dict[str, Any]:
    """Export `resource` to storage (BULKFLOW_EXPORT_URL) and return the manifest."""
    settings = Settings()
    request = plan_export(resource, format, filter_values(filters), fields, context=settings.rule_context())
    manifest = write_export(request, str(flow_run.id), settings)
    publish_export(manifest)
    return manifest.model_dump(mode="json")


@flow(name="nightly-export", validate_parameters=True)
def nightly_export(format: ExportFormat = "parquet") -> list[dict[str, Any]]:
    """A snapshot of every resource (the nightly deployment runs this)."""
    return [export_flow(resource=cast(ResourceName, name), format=format) for name in RESOURCES]
