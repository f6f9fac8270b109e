"""Every deployment, declared once (`CATALOG`). `bulkflow serve` serves them as they are;
`bulkflow deploy` writes the same declarations as the prefect.yaml that `prefect deploy`
reads, for a process work pool; the HTTP API triggers them by name."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound

from bulkflow.settings import Settings
from flows.export_flow import export_flow, nightly_export
from flows.import_flow import import_flow
from flows.landing_flow import landing_pickup
from tasks.runs import EXPORT, IMPORT, LANDING, NIGHTLY

TAGS = ["bulkflow"]
WORK_POOL = "bulkflow"
"""The process work pool `bulkflow deploy` registers the deployments on (and creates)."""


@dataclass(frozen=True)
class Declared:
    """One deployment: its address (`flow/deployment`), the flow and where it is defined."""

    address: str
    flow: Flow[..., Any]
    entrypoint: str
    description: str
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: Callable[[Settings], str] | None = None
    """Its schedule, read from the settings."""

    @property
    def name(self) -> str:
        return self.address.split("/")[1]


CATALOG: tuple[Declared, ...] = (
    Declared(
        IMPORT,
        import_flow,
        "flows/import_flow.py:import_flow",
        "Import a file (path or URL) into users, articles or comments, exactly once.",
    ),
    Declared(
        EXPORT,
        export_flow,
        "flows/export_flow.py:export_flow",
        "Export a resource (filters, fields) to BULKFLOW_EXPORT_URL with a manifest.",
    ),
    Declared(
        NIGHTLY,
        nightly_export,
        "flows/export_flow.py:nightly_export",
        "Parquet of what changed in users, articles and comments since the last run, deletes included (a full "
        "snapshot every BULKFLOW_FULL_EVERY_DAYS), into BULKFLOW_EXPORT_URL; prunes tombstones and old history.",
        parameters={"format": "parquet"},
        cron=lambda settings: settings.nightly_cron,
    ),
    Declared(
        LANDING,
        landing_pickup,
        "flows/landing_flow.py:landing_pickup",
        "Import files newly landed under BULKFLOW_LANDING_URL/<resource>/, each once, users first. "
        "Started by the landing watcher when files wait (no schedule: no empty runs).",
    ),
)


def served(declared: Declared, settings: Settings) -> RunnerDeployment:
    """The deployment as `bulkflow serve` serves it, scheduled as `settings` say."""
    deployment = declared.flow.to_deployment(
        name=declared.name,
        tags=TAGS,
        description=declared.description,
        parameters=declared.parameters,
        cron=declared.cron(settings) if declared.cron else None,
    )
    return _sync(deployment)


def _sync(deployment: RunnerDeployment | Coroutine[Any, Any, RunnerDeployment]) -> RunnerDeployment:
    """Prefect types its sync-compatible `to_deployment` as `T | Coroutine`; called from sync
    code it returns T."""
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def all_deployments(settings: Settings) -> list[RunnerDeployment]:
    """Every deployment, scheduled as `settings` say."""
    return [served(declared, settings) for declared in CATALOG]


def by_address(address: str, settings: Settings) -> RunnerDeployment:
    """The served deployment at `address` (`flow/deployment`)."""
    return served(next(d for d in CATALOG if d.address == address), settings)


def prefect_yaml(settings: Settings, repository: Path) -> dict[str, Any]:
    """The prefect.yaml of the catalog for a process work pool: workers run each flow from
    `repository` (the code, installed there), schedules filled in from `settings`."""
    return {
        "name": "bulkflow",
        "prefect-version": ">=3.1,<4",
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": str(repository)}}],
        "deployments": [
            {
                "name": declared.name,
                "entrypoint": declared.entrypoint,
                "description": declared.description,
                "tags": TAGS,
                "parameters": declared.parameters,
                "schedules": [{"cron": declared.cron(settings)}] if declared.cron else [],
                "work_pool": {"name": WORK_POOL},
            }
            for declared in CATALOG
        ],
    }


def registered_owners(deployments: list[RunnerDeployment]) -> dict[str, str | None]:
    """The names among `deployments` that the Prefect server already holds, each with its
    work pool (made by `prefect deploy`) or None (made by `bulkflow serve`)."""
    owners: dict[str, str | None] = {}
    with get_client(sync_client=True) as client:
        for deployment in deployments:
            name = f"{deployment.flow_name}/{deployment.name}"
            try:
                owners[name] = client.read_deployment_by_name(name).work_pool_name
            except ObjectNotFound:
                continue
    return owners
