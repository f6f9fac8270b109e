"""What an import does once its error budget is spent (`--on-budget`): abort, pause for an
operator's answer, or continue flagged. The budget itself is judged in `decisions/budget.py`."""

from __future__ import annotations

from typing import Literal

from prefect.artifacts import create_table_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger
from pydantic import Field

from bulkflow.db import execute
from bulkflow.errors import BudgetExceeded
from bulkflow.settings import Settings
from decisions.budget import RejectBudget
from schemas.parameters import OnBudget
from tasks import events
from tasks.jobs import Job, job_totals
from tasks.report import artifact_key

PAUSE_POLL_S = 2
"""How often a paused import asks the Prefect API whether it was resumed."""


class BudgetAnswer(RunInput):
    """The form an operator answers a paused import with (Prefect UI: Resume)."""

    decision: Literal["approve", "abort"] = Field(
        description="approve: go on, as if no budget were set; abort: apply nothing of the file"
    )


class BudgetWatch:
    """Adds up the rows decided so far; once the budget is spent, acts as `on_budget` says
    (once: an approved or continued run is not asked again)."""

    def __init__(
        self, settings: Settings, job: Job, budget: RejectBudget, on_budget: OnBudget, pause_timeout_s: int
    ) -> None:
        self.settings, self.job, self.budget = settings, job, budget
        self.on_budget, self.pause_timeout_s = on_budget, pause_timeout_s
        self.rows_read = self.rejected = 0
        self.note: str | None = None
        """Why the budget was spent, and what then happened, when the run went on."""

    def spent(self, rows_read: int, rejected: int) -> str | None:
        """Count a decided chunk; why the budget is spent now, or None."""
        self.rows_read += rows_read
        self.rejected += rejected
        if self.note is not None:
            return None
        return self.budget.spent(self.rows_read, self.rejected)

    def act(self, why: str) -> None:
        """Once every decided chunk is recorded: raise `BudgetExceeded` (abort, or a pause
        answered `abort` or not at all), or note why the run goes on."""
        events.budget_exceeded(self.job.resource.name, self.job.source_name, why, self.on_budget)
        logger = get_run_logger()
        if self.on_budget == "continue":
            logger.warning("%s: continuing, as --on-budget continue says", why)
            self._note(f"{why}: continued")
            return
        if self.on_budget == "pause" and self._approved(why):
            logger.warning("%s: an operator approved going on", why)
            self._note(f"{why}: approved by an operator")
            return
        raise BudgetExceeded(f"{why}: nothing was applied")

    def _note(self, note: str) -> None:
        """Keep why the run went on, on the job too: its report and API status read it there."""
        self.note = note
        execute(self.settings, "UPDATE import_jobs SET budget_exceeded = $2 WHERE job_key = $1", (self.job.key, note))

    def _approved(self, why: str) -> bool:
        totals = job_totals(self.settings, self.job.key)
        rows = [{"rule": rule, "rejects": count} for rule, count in totals.rejects_by_rule.items()]
        create_table_artifact(
            table=rows,
            key=artifact_key("import", self.job.resource.name, self.job.source_name, "budget"),
            description=f"{why}. Resume this run with decision approve (go on) or abort (apply nothing).",
        )
        try:
            answer = pause_flow_run(
                wait_for_input=BudgetAnswer, timeout=self.pause_timeout_s, poll_interval=PAUSE_POLL_S
            )
        except FlowPauseTimeout:
            get_run_logger().warning("nobody answered within %d s: aborting", self.pause_timeout_s)
            return False
        return answer.decision == "approve"
