"""Prefect events for automations: one when an import or an export finishes.

| event | when | resource | payload |
|---|---|---|---|
| `bulkflow.import.completed` | an import run finished | `bulkflow.import.<resource>`, named after the file | the report: rows_read, inserted, updated, rejected, error_rate, job_key, ... |
| `bulkflow.import.failed` | an import run failed | the same | `error` (one line), `source_name` |
| `bulkflow.import.high-error-rate` | a completed import rejected more than `BULKFLOW_ERROR_RATE_ALERT` of its rows | the same | the report |
| `bulkflow.import.budget-exceeded` | an import's rejects spent its error budget | the same | `reason` (one line), `on_budget` (abort, pause, continue), `source_name` |
| `bulkflow.import.schema-drift` | a file's columns differ from the previous import's of the same profile (or resource) | the same | `added`, `missing`, `previous_job`, `profile`, `blocked`, `source_name` |
| `bulkflow.export.completed` / `.failed` | an export run finished / failed | `bulkflow.export.<resource>` | the manifest / `error` |
| `bulkflow.flow-run.alive` | every `ALIVE_EVERY_S` while a bulkflow flow run works | `prefect.flow-run.<id>` | – |

Automations match on the event name and resource labels (`bulkflow.resource`), never on
payload values, so a threshold is its own event.

`bulkflow.flow-run.alive` is bulkflow's own heartbeat, at a period fixed here and read by the
silent-runs automation (`deployments/automations.py`): the two agree by construction, where
Prefect's heartbeat period is a setting of each process that runs a flow, which the
automation cannot know.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.events import emit_event
from prefect.runtime import flow_run

from bulkflow.errors import first_line
from schemas.reports import ColumnDrift, ExportManifest, ImportReport

ALIVE = "bulkflow.flow-run.alive"
ALIVE_EVERY_S = 30
"""How often a bulkflow flow run says it is alive; a run silent for three periods is gone."""


@contextmanager
def alive() -> Iterator[None]:
    """Emit `bulkflow.flow-run.alive` for the current flow run every ALIVE_EVERY_S seconds
    while the block runs, from a thread of its own (the run may be waiting on a lock). The
    first one a period after the start: the run's Running event opens the silent-runs
    automation's window, so a run that ends sooner sends none."""
    run_id = flow_run.id
    if run_id is None:
        yield
        return
    stop = threading.Event()
    resource = {"prefect.resource.id": f"prefect.flow-run.{run_id}"}

    def beat() -> None:
        while not stop.wait(ALIVE_EVERY_S):
            emit_event(ALIVE, resource=resource)

    # the thread emits through the run's own Prefect client and events worker
    thread = threading.Thread(target=contextvars.copy_context().run, args=(beat,), name="alive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def _resource(kind: str, resource: str, name: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"bulkflow.{kind}.{resource}",
        "prefect.resource.name": name,
        "bulkflow.resource": resource,
    }


def import_completed(report: ImportReport, alert_above: float) -> None:
    payload: dict[str, Any] = report.model_dump(mode="json")
    resource = _resource("import", report.resource, report.source_name)
    emit_event("bulkflow.import.completed", resource=resource, payload=payload)
    if report.error_rate > alert_above:
        emit_event("bulkflow.import.high-error-rate", resource=resource, payload=payload)


def import_failed(resource: str, source_name: str, error: BaseException) -> None:
    payload = {"error": first_line(error), "source_name": source_name}
    emit_event("bulkflow.import.failed", resource=_resource("import", resource, source_name), payload=payload)


def budget_exceeded(resource: str, source_name: str, reason: str, on_budget: str) -> None:
    payload = {"reason": reason, "on_budget": on_budget, "source_name": source_name}
    emit_event("bulkflow.import.budget-exceeded", resource=_resource("import", resource, source_name), payload=payload)


def schema_drift(resource: str, source_name: str, drift: ColumnDrift, profile: str | None, blocked: bool) -> None:
    payload = {**drift.model_dump(), "profile": profile, "blocked": blocked, "source_name": source_name}
    emit_event("bulkflow.import.schema-drift", resource=_resource("import", resource, source_name), payload=payload)


def export_completed(manifest: ExportManifest) -> None:
    resource = _resource("export", manifest.resource, f"{manifest.resource}.{manifest.format}")
    emit_event("bulkflow.export.completed", resource=resource, payload=manifest.model_dump(mode="json"))


def export_failed(resource: str, format: str, error: BaseException) -> None:
    payload = {"error": first_line(error)}
    emit_event(
        "bulkflow.export.failed", resource=_resource("export", resource, f"{resource}.{format}"), payload=payload
    )
