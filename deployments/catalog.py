"""Every deployment, declared once: the runner (`bulkflow serve`), the HTTP API (which triggers
them by name) and the tests read these definitions."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

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
"""The process work pool of prefect.yaml's deployments (`bulkflow deploy` creates it)."""


def _sync(deployment: RunnerDeployment | Coroutine[Any, Any, RunnerDeployment]) -> RunnerDeployment:
    """Prefect types its sync-compatible `to_deployment` as `T | Coroutine`; called from sync
    code it returns T."""
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def import_deployment() -> RunnerDeployment:
    return _sync(
        import_flow.to_deployment(
            name=IMPORT.split("/")[1],
            tags=TAGS,
            description="Import a file (path or URL) into users, articles or comments, exactly once.",
        )
    )


def export_deployment() -> RunnerDeployment:
    return _sync(
        export_flow.to_deployment(
            name=EXPORT.split("/")[1],
            tags=TAGS,
            description="Export a resource (filters, fields) to BULKFLOW_EXPORT_URL with a manifest.",
        )
    )


def nightly_deployment(settings: Settings) -> RunnerDeployment:
    return _sync(
        nightly_export.to_deployment(
            name=NIGHTLY.split("/")[1],
            tags=TAGS,
            cron=settings.nightly_cron,
            parameters={"format": "parquet"},
            description="Parquet snapshot of users, articles and comments into BULKFLOW_EXPORT_URL.",
        )
    )


def landing_deployment() -> RunnerDeployment:
    return _sync(
        landing_pickup.to_deployment(
            name=LANDING.split("/")[1],
            tags=TAGS,
            description="Import files newly landed under BULKFLOW_LANDING_URL/<resource>/, each once, users first. "
            "Started by the landing watcher when files wait (no schedule: no empty runs).",
        )
    )


def all_deployments(settings: Settings) -> list[RunnerDeployment]:
    """Every deployment, scheduled as `settings` say."""
    return [import_deployment(), export_deployment(), nightly_deployment(settings), landing_deployment()]


def deploy_environment(settings: Settings) -> dict[str, str]:
    """The environment `prefect deploy` needs to render prefect.yaml as the catalog: the same
    schedule settings (Prefect's `{{ $VAR }}` templating has no defaults, so `bulkflow
    deploy` fills in every one)."""
    return {"BULKFLOW_NIGHTLY_CRON": settings.nightly_cron}


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
