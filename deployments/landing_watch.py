"""The landing watcher: starts a landing pick-up run only when files wait, so the runs list
holds no empty pick-ups (a one-minute schedule made 1,440 runs a day, nearly all with
nothing to do). It looks every `BULKFLOW_LANDING_INTERVAL` seconds: a listing of the landing
storage and one lookup per file, no flow run. It runs inside `bulkflow serve`, or on its own
as `bulkflow watch` next to work-pool workers. Several watchers are safe: a watcher starts
no pick-up while one is scheduled or running, and every file is imported once by content
whatever the number of pick-ups.
"""

from __future__ import annotations

import threading
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.logging import get_logger

from bulkflow.errors import first_line
from bulkflow.settings import Settings
from tasks.landing import unseen_files
from tasks.run_labels import landing_run_name, run_tags
from tasks.runs import LANDING

_ACTIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]
logger = get_logger("bulkflow.landing-watch")


def start_pickup_if_files_wait(settings: Settings) -> UUID | None:
    """Create a run of the landing deployment when files wait and no pick-up is scheduled or
    running, unless the deployment is paused (by an operator, or by the error-rate
    automation): then it says so, with the files that wait, every time it looks. Returns the
    new run's id."""
    waiting = unseen_files(settings, settings.landing_root())
    if not waiting:
        return None
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(LANDING)
        if deployment.paused:
            logger.warning(
                "the landing pick-up %s is paused (by an operator, or by the error-rate automation after a bad "
                "file): %d landed file(s) wait; look at the last pick-up's rejects, then `prefect deployment "
                "resume %s`",
                LANDING,
                len(waiting),
                LANDING,
            )
            return None
        active = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_ACTIVE))),
            limit=1,
        )
        if active:
            return None
        run = client.create_flow_run_from_deployment(
            deployment.id, tags=sorted(run_tags(None, "landing")), name=landing_run_name()
        )
    logger.info("%d landed file(s) wait: started pick-up %s", len(waiting), run.id)
    return run.id


def watch(settings: Settings, stop: threading.Event) -> None:
    """Look for waiting files until `stop` is set."""
    while True:
        try:
            start_pickup_if_files_wait(settings)
        except Exception as error:  # noqa: BLE001 - database or Prefect API away: look again next time
            logger.warning("landing watch: %s", first_line(error))
        if stop.wait(settings.landing_interval_s):
            return
