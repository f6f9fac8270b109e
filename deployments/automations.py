"""Automations shipped with bulkflow, declared once; `bulkflow automations install` creates
them on the Prefect server (again and again: an existing one of the same name is replaced).

`mark-silent-runs-crashed`: a flow run sends a heartbeat event every
`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds while it runs (30 recommended for bulkflow); a
run killed with `kill -9`, or on a machine that was lost, goes silent and would stay
"Running" forever. When a running flow run sends no heartbeat (nor a final state) for three
periods, this automation marks it Crashed. The re-run that resumes the job names the runs it
continues in its report (`continues_runs`).

`pause-landing-on-high-error-rate`: an import that rejects more than
`BULKFLOW_ERROR_RATE_ALERT` of its rows emits `bulkflow.import.high-error-rate`; this
automation then pauses the landing pick-up deployment, so no more partner files load until
someone has looked at the rejects and resumed it (`prefect deployment resume ...`).
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, PauseDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.settings import get_current_settings

from deployments.names import LANDING

HIGH_ERROR_RATE = "pause-landing-on-high-error-rate"
SILENT_RUNS = "mark-silent-runs-crashed"
_FINAL = ("Completed", "Failed", "Cancelled", "Crashed")


def silent_runs_automation(heartbeat_s: int) -> AutomationCore:
    """Crash flow runs that sent no heartbeat (nor a final state) for three heartbeats."""
    return AutomationCore(
        name=SILENT_RUNS,
        description="A running flow run went silent (no heartbeat for three periods): mark it Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{state}" for state in _FINAL)},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=3 * heartbeat_s),
        ),
        actions=[
            ChangeFlowRunState(
                name="Crashed",
                state=StateType.CRASHED,
                message="no heartbeat for three periods: the process running it is gone",
                force=False,
            )
        ],
    )


def high_error_rate_automation(landing_deployment_id: UUID) -> AutomationCore:
    return AutomationCore(
        name=HIGH_ERROR_RATE,
        description="An import rejected more than BULKFLOW_ERROR_RATE_ALERT of its rows: pause the landing pick-up.",
        trigger=EventTrigger(
            expect={"bulkflow.import.high-error-rate"},
            match={"prefect.resource.id": "bulkflow.import.*"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[PauseDeployment(source="selected", deployment_id=landing_deployment_id)],
    )


def install() -> list[str]:
    """Create (or replace) the automations; returns their names. The landing deployment must
    be registered first (`bulkflow serve` or `prefect deploy --all`)."""
    heartbeat_s = get_current_settings().flows.heartbeat_frequency or 180
    with get_client(sync_client=True) as client:
        landing = client.read_deployment_by_name(LANDING)
        automations = [high_error_rate_automation(landing.id), silent_runs_automation(heartbeat_s)]
        for automation in automations:
            for existing in client.read_automations_by_name(automation.name):
                client.delete_automation(existing.id)
            client.create_automation(automation)
    return [automation.name for automation in automations]
