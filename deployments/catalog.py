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

IMPORT = "import/import"
"""`<flow name>/<deployment name>`: what `create_flow_run` and `run_deployment` address."""
EXPORT = "export/export"
NIGHTLY = "nightly-export/nightly-parquet"
LANDING = "landing-pickup/landing"
TAGS = ["bulkflow"]


def _sync(deployment: RunnerDeployment | Coroutine[Any, Any, RunnerDeployment]) -> RunnerDeployment:
    """Prefect types its sync-compatible `to_deployment` as `T | Coroutine`; called from sync
    code it returns T."""
    assert isinstance(deployment, RunnerDeployment)
    return deployment


def import_deployment() -> RunnerDeployment:
    return _sync(import_flow.to_deployment(
        name=IMPORT.split("/")[1],
        tags=TAGS,
        description="Import a file (path or URL) into users, articles or comments, exactly once.",
    ))


def export_deployment() -> RunnerDeployment:
    return _sync(export_flow.to_deployment(
        name=EXPORT.split("/")[1],
        tags=TAGS,
        description="Export a resource (filters, fields) to BULKFLOW_EXPORT_URL with a manifest.",
    ))


def nightly_deployment(settings: Settings) -> RunnerDeployment:
    return _sync(nightly_export.to_deployment(
        name=NIGHTLY.split("/")[1],
        tags=TAGS,
        cron=settings.nightly_cron,
        parameters={"format": "parquet"},
        description="Parquet snapshot of users, articles and comments into BULKFLOW_EXPORT_URL.",
    ))


def landing_deployment(settings: Settings) -> RunnerDeployment:
    return _sync(landing_pickup.to_deployment(
        name=LANDING.split("/")[1],
        tags=TAGS,
        interval=settings.landing_interval_s,
        description="Import files newly landed under BULKFLOW_LANDING_URL/<resource>/, each once, users first.",
    ))


def all_deployments(settings: Settings) -> list[RunnerDeployment]:
    """Every deployment, scheduled as `settings` say."""
    return [import_deployment(), export_deployment(), nightly_deployment(settings), landing_deployment(settings)]


def claimed_by_work_pools(deployments: list[RunnerDeployment]) -> list[str]:
    """The names among `deployments` that the Prefect server already holds for a work pool
    (made by `prefect deploy`): serving one of those names would replace its pull steps."""
    claimed = []
    with get_client(sync_client=True) as client:
        for deployment in deployments:
            name = f"{deployment.flow_name}/{deployment.name}"
            try:
                registered = client.read_deployment_by_name(name)
            except ObjectNotFound:
                continue
            if registered.work_pool_name:
                claimed.append(name)
    return claimed
