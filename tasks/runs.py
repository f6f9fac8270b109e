"""Flow runs that a run starts on a deployment and waits for: the landing pick-up starts one
import run per landed file, so any worker can take each, and reads back how each ended."""

from __future__ import annotations

import re
import time
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled

from bulkflow.errors import TerminalError

POLL_S = 1.0

# The deployments, addressed `<flow name>/<deployment name>` as `run_deployment` and
# `create_flow_run_from_deployment` take them; `deployments/catalog.py` declares them under
# these names, and the API and the landing pick-up start runs on them without importing a flow.
IMPORT = "import/import"
EXPORT = "export/export"
NIGHTLY = "nightly-export/nightly-parquet"
LANDING = "landing-pickup/landing"

_PREFECT_PREFIX = re.compile(r"^(?:Flow|Task) run encountered an exception:\s*(?:(\w+):\s*)?")


def our_message(message: str | None) -> str | None:
    """A failed run's message without Prefect's `Flow run encountered an exception: X:` prefix."""
    return _PREFECT_PREFIX.sub("", message) if message else message


def start_run(deployment: str, parameters: dict[str, Any], tags: set[str], name: str) -> FlowRun:
    """Create a run of `deployment` (`flow/deployment`) called `name`, as a child of the
    current flow run, for a runner or worker to take; returns at once."""
    try:
        run = run_deployment(
            deployment, parameters=parameters, tags=sorted(tags), timeout=0, as_subflow=True, flow_run_name=name
        )
    except ObjectNotFound:
        raise TerminalError(
            f"deployment {deployment} is not registered: start `bulkflow serve`, or `bulkflow deploy` and workers"
        ) from None
    assert isinstance(run, FlowRun)  # sync-compatible: called from sync code it returns the run, not a coroutine
    return run


def wait_for_run(run_id: UUID, start_within_s: float) -> FlowRun:
    """The run, once in a final state (completed, failed, crashed, cancelled). A run that no
    runner or worker has started within `start_within_s` is cancelled (so it cannot start
    later, behind the caller's back) and returned so, saying why."""
    deadline = time.monotonic() + start_within_s
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(run_id)
            if run.state is not None and run.state.is_final():
                return run
            if run.start_time is None and time.monotonic() > deadline:
                message = (
                    f"no runner or worker started this run within {start_within_s:.0f} s: "
                    "is `bulkflow serve`, or a worker of its work pool, running?"
                )
                client.set_flow_run_state(run_id, Cancelled(message=message), force=True)
                return client.read_flow_run(run_id)
            time.sleep(POLL_S)
