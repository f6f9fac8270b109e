"""Automations shipped as examples, declared once; `bulkflow automations install` creates
them on the Prefect server (again and again: an existing one of the same name is replaced).

`pause-landing-on-high-error-rate`: an import that rejects more than
`BULKFLOW_ERROR_RATE_ALERT` of its rows emits `bulkflow.import.high-error-rate`; this
automation then pauses the landing pick-up deployment, so no more partner files load until
someone has looked at the rejects and resumed it (`prefect deployment resume ...`).
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.events.actions import PauseDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from deployments.catalog import LANDING

HIGH_ERROR_RATE = "pause-landing-on-high-error-rate"


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
    """Create (or replace) the example automations; returns their names. The landing
    deployment must be registered first (`bulkflow serve` or `prefect deploy --all`)."""
    with get_client(sync_client=True) as client:
        landing = client.read_deployment_by_name(LANDING)
        for existing in client.read_automations_by_name(HIGH_ERROR_RATE):
            client.delete_automation(existing.id)
        client.create_automation(high_error_rate_automation(landing.id))
    return [HIGH_ERROR_RATE]
