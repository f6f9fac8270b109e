"""The landing pick-up: import each newly landed file once, in dependency order. Only wiring."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from prefect import flow, get_run_logger, tags
from prefect.states import State

from bulkflow.errors import TerminalError, is_retryable
from bulkflow.settings import Settings
from flows.import_flow import import_flow
from schemas.parameters import ResourceName
from tasks.landing import Outcome, already_imported, content_sha256, find_new_files, record_outcome
from tasks.report import LandingSummary
from tasks.run_labels import label_run


def _run_name() -> str:
    return f"landing-{datetime.now(UTC):%Y-%m-%dT%H:%MZ}"


@flow(name="landing-pickup", flow_run_name=_run_name, validate_parameters=True)
def landing_pickup(landing: str | None = None) -> dict[str, list[str]]:
    """Import the files under `<landing>/<resource>/` that no earlier pick-up dealt with.

    A file whose content was imported before (same checksum) is skipped as a duplicate. A
    file that cannot be imported is recorded as failed and not tried again until it changes;
    a passing failure (database down) leaves it for the next pick-up. Returns the locations
    by outcome; fails at the end when any file failed, after trying all the others. Publishes
    a summary table: file, outcome, rows, rejected, import run.

    Args:
        landing: The landing folder or bucket prefix (an fsspec URL). Default: BULKFLOW_LANDING_URL.
    """
    settings = Settings()
    label_run(None)
    logger = get_run_logger()
    outcomes: dict[str, list[str]] = {"imported": [], "duplicate": [], "failed": [], "retry_later": []}
    summary = LandingSummary()
    for file in find_new_files(settings, landing or settings.landing_root()):
        sha256 = content_sha256(file)
        outcome: Outcome | None
        if already_imported(settings, file.resource, sha256):
            outcome, detail, run_id = "duplicate", None, None
            summary.add(file.location, outcome, None, None)
        else:
            with tags("via:landing"):
                state = import_flow(resource=cast(ResourceName, file.resource), source=file.location, return_state=True)
            outcome, detail = _outcome_of(state)
            run_id = str(state.state_details.flow_run_id)
            summary.add(file.location, outcome or "retry later", run_id, state.result(raise_on_failure=False))
        if outcome is None:
            logger.warning("%s will be tried again by the next pick-up: %s", file.location, detail)
            outcomes["retry_later"].append(file.location)
            continue
        record_outcome(settings, file, sha256, outcome, detail, run_id)
        logger.info("%s: %s%s", file.location, outcome, f" ({detail})" if detail else "")
        outcomes[outcome].append(file.location)
    summary.publish()
    if outcomes["failed"] or outcomes["retry_later"]:
        raise TerminalError(
            f"{len(outcomes['failed'])} landed file(s) failed, {len(outcomes['retry_later'])} left for the next "
            f"pick-up: {', '.join(outcomes['failed'] + outcomes['retry_later'])}"
        )
    return outcomes


def _outcome_of(state: State) -> tuple[Outcome | None, str | None]:
    """imported; failed (with the reason) for unusable files; None when a retry may cure it."""
    if state.is_completed():
        return "imported", None
    error = state.result(raise_on_failure=False)
    if isinstance(error, BaseException) and is_retryable(error):
        return None, str(error)
    return "failed", str(error) if isinstance(error, BaseException) else state.message
