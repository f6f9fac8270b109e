"""Jobs are Prefect flow runs: trigger a deployment idempotently, read a run back as a job."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath
from typing import Any
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import DeploymentFlowRunCreate
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled, to_state_create

from api.errors import ApiError
from api.models import JobStatus
from files.remote import is_remote
from tasks.run_labels import RETRYABLE_FAILURE, run_tags
from tasks.runs import our_message

STATUS_OF_STATE: dict[StateType, JobStatus] = {
    StateType.SCHEDULED: "queued",
    StateType.PENDING: "queued",
    StateType.PAUSED: "queued",
    StateType.RUNNING: "running",
    StateType.CANCELLING: "running",
    StateType.COMPLETED: "completed",
    StateType.FAILED: "failed",
    StateType.CRASHED: "failed",
    StateType.CANCELLED: "cancelled",
}
STATES_OF_STATUS: dict[JobStatus, list[StateType]] = {}
for _state, _status in STATUS_OF_STATE.items():
    STATES_OF_STATUS.setdefault(_status, []).append(_state)


@dataclass(frozen=True)
class JobRun:
    job_id: str
    status: JobStatus
    parameters: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    message: str | None
    """The state's message: the reason when the job failed."""
    retryable: bool | None = None
    """For a failed job: whether a later try may succeed (its run is tagged so)."""


class RunCreator:
    """Creates the flow runs of one app's jobs: one at a time, on one Prefect client opened
    at the first and closed with the app.

    One at a time because Prefect's default database (SQLite) takes one writer at a time:
    creates sent together lock it, the server answers 503 and each client backs off 2, 4,
    8 s, so 20 uploads at once were answered in 9 s where one at a time takes 2-3 s (the
    server's own ~0.1 s a run). A run's parameters are checked here by the models the
    deployment's form is made from, so the server is asked not to check them again against
    the form's JSON schema (a third of its time for each run)."""

    def __init__(self) -> None:
        self._turn = threading.Lock()
        self._client: SyncPrefectClient | None = None

    def trigger(
        self, deployment_name: str, parameters: dict[str, Any], kind: str, idempotency_key: str | None, name: str
    ) -> JobRun:
        """Create a flow run of the deployment called `name`, tagged `via:api` and with its
        resource. Prefect keys are unique per flow and a repeated key returns the existing
        run (new parameters ignored): the key is prefixed with the job kind."""
        created = DeploymentFlowRunCreate(
            parameters=parameters,
            state=to_state_create(Scheduled()),
            tags=sorted(run_tags(parameters.get("resource"), via="api")),
            name=name,
            idempotency_key=f"{kind}:{idempotency_key}" if idempotency_key else None,
            enforce_parameter_schema=False,
        )
        with self._turn:
            client = self._open()
            try:
                deployment = client.read_deployment_by_name(deployment_name)
            except ObjectNotFound:
                raise ApiError(
                    503, "deployment_missing", f"deployment {deployment_name} is not registered: start `bulkflow serve`"
                ) from None
            response = client.request(
                "POST",
                "/deployments/{id}/create_flow_run",
                path_params={"id": deployment.id},
                json=created.model_dump(mode="json", exclude_unset=True),
            )
        return _as_job(FlowRun.model_validate(response.json()))

    def _open(self) -> SyncPrefectClient:
        if self._client is None:
            self._client = get_client(sync_client=True).__enter__()
        return self._client

    def close(self) -> None:
        with self._turn:
            if self._client is not None:
                self._client.__exit__(None, None, None)
                self._client = None


def read_job(job_id: str, flow_name: str) -> JobRun:
    """The run of `flow_name` with this id; 404 when there is none."""
    missing = ApiError(404, "not_found", f"no {flow_name} job {job_id}")
    try:
        run_id = UUID(job_id)
    except ValueError:
        raise missing from None
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
            flow = client.read_flow(run.flow_id)
        except ObjectNotFound:
            raise missing from None
    if flow.name != flow_name:
        raise missing
    return _as_job(run)


def _as_job(run: Any) -> JobRun:
    state = run.state
    finished = run.end_time if state is not None and state.is_final() else None
    failed = state is not None and (state.is_failed() or state.is_crashed())
    return JobRun(
        job_id=str(run.id),
        status=STATUS_OF_STATE.get(state.type, "queued") if state is not None else "queued",
        parameters=dict(run.parameters or {}),
        started_at=run.start_time,
        finished_at=finished,
        duration_s=run.total_run_time.total_seconds() if run.start_time else None,
        message=our_message(state.message) if failed else None,
        retryable=(RETRYABLE_FAILURE in run.tags) if failed else None,
    )


def public_location(location: str | None) -> str | None:
    """A location as clients may see it: URLs as they are, server paths as a file name."""
    if location is None or is_remote(location):
        return location
    return PurePath(location).name


def public_text(text: str | None, *locations: str | None) -> str | None:
    """`text` with every server path among `locations` shown as its file name."""
    if text is None:
        return None
    for location in locations:
        shown = public_location(location)
        if location and shown != location:
            text = text.replace(location, shown or "")
    return text
