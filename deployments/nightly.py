"""The nightly Parquet snapshot of every resource.

Serve it against a Prefect server with `python -m deployments.nightly`
(cron from BULKFLOW_NIGHTLY_CRON, default 02:00 every day).
"""

from __future__ import annotations

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from bulkflow.settings import get_settings
from flows.export_flow import nightly_export


def nightly_deployment() -> RunnerDeployment:
    return nightly_export.to_deployment(
        name="nightly-parquet",
        cron=get_settings().nightly_cron,
        parameters={"format": "parquet"},
        description="Parquet snapshot of users, articles and comments into BULKFLOW_EXPORT_URL.",
    )


if __name__ == "__main__":
    serve(nightly_deployment())
