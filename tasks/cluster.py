"""The Dask cluster an import's chunk work runs on when `BULKFLOW_TASK_RUNNER=dask`.

prefect-dask's `DaskTaskRunner`, either on an existing scheduler (`BULKFLOW_DASK_ADDRESS`,
whose workers need the project installed and `PREFECT_API_URL` set to the flow's server) or
on a local cluster of worker processes started for the run and closed after it, which
report to the flow's own Prefect API, ephemeral or not. Each worker runs one chunk task at
a time: polars already spreads a chunk over the cores.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect.client.orchestration import get_client
from prefect.task_runners import TaskRunner

from bulkflow.errors import ParameterError
from bulkflow.settings import Settings


def dask_task_runner(settings: Settings) -> TaskRunner[Any]:
    """The runner for `settings`; ParameterError naming the extra when prefect-dask is missing."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ParameterError("BULKFLOW_TASK_RUNNER=dask needs the dask extra: pip install 'bulkflow[dask]'") from None
    logging.getLogger("distributed").setLevel(logging.WARNING)  # the cluster's chatter is not the run's log
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)  # without this, each worker would start an ephemeral API of its own
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(settings, api_url))


def local_cluster_kwargs(settings: Settings, api_url: str) -> dict[str, Any]:
    """The `distributed.LocalCluster` of an import: worker processes of one thread each, the
    scheduler, workers and dashboard on loopback only (a free port each, the dashboard's in
    the log), the workers reporting to `api_url`."""
    return {
        "n_workers": settings.dask_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
        "env": {"PREFECT_API_URL": api_url},
    }
