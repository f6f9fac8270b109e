"""Automations shipped with bulkflow, declared once; `bulkflow automations install` creates
them on the Prefect server (again and again: an existing one of the same name is replaced).

`mark-silent-runs-crashed`: every bulkflow flow run says it is alive every
`tasks.events.ALIVE_EVERY_S` seconds (`bulkflow.flow-run.alive`, from a thread of its own,
so a run waiting on a write slot says so too); a run killed with `kill -9`, or on a machine
that was lost, goes silent and would stay "Running" forever. When a flow run, once Running,
sends no such event (nor a final state) for three periods, this automation marks it Crashed. The
period is a constant of the code, not a setting, so the runs and the automation cannot
disagree about it. The re-run that resumes the job names the runs it continues in its
report (`continues_runs`).

`pause-landing-on-high-error-rate`: an import that rejects more than
`BULKFLOW_ERROR_RATE_ALERT` of its rows emits `bulkflow.import.high-error-rate`; this
automation then pauses the landing pick-up deployment, so no more partner files load until
someone has looked at the rejects and resumed it (`prefect deployment resume ...`). It
needs the landing deployment registered (`bulkflow serve` or `bulkflow deploy`).
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, PauseDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound

from bulkflow.errors import ParameterError
from tasks.events import ALIVE, ALIVE_EVERY_S
from tasks.runs import LANDING

HIGH_ERROR_RATE = "pause-landing-on-high-error-rate"
SILENT_RUNS = "mark-silent-runs-crashed"
_FINAL = ("Completed", "Failed", "Cancelled", "Crashed")


def silent_runs_automation() -> AutomationCore:
    """Crash flow runs that said nothing (neither alive nor a final state) for three periods."""
    return AutomationCore(
        name=SILENT_RUNS,
        description="A running flow run went silent (not alive for three periods): mark it Crashed.",
        trigger=EventTrigger(
            after={ALIVE, "prefect.flow-run.Running"},  # from the start: a run killed before it said anything too
            expect={ALIVE, *(f"prefect.flow-run.{state}" for state in _FINAL)},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=3 * ALIVE_EVERY_S),
        ),
        actions=[
            ChangeFlowRunState(
                name="Crashed",
                state=StateType.CRASHED,
                message="not alive for three periods: the process running it is gone",
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
    """Create (or replace) the automations; returns their names. The silent-runs one is
    installed whatever the server holds; the landing one needs the landing deployment
    registered, and ParameterError says what to do first when it is not."""
    with get_client(sync_client=True) as client:
        _replace(client, silent_runs_automation())
        try:
            landing = client.read_deployment_by_name(LANDING)
        except ObjectNotFound:
            raise ParameterError(
                f"installed {SILENT_RUNS}, but {HIGH_ERROR_RATE} pauses the deployment {LANDING}, which this Prefect "
                "server does not hold yet: start `bulkflow serve` (or run `bulkflow deploy`), then run "
                "`bulkflow automations install` again"
            ) from None
        _replace(client, high_error_rate_automation(landing.id))
    return [SILENT_RUNS, HIGH_ERROR_RATE]


def _replace(client: SyncPrefectClient, automation: AutomationCore) -> None:
    for existing in client.read_automations_by_name(automation.name):
        client.delete_automation(existing.id)
    client.create_automation(automation)
