"""The landing pick-up: each newly landed file becomes its own import run, in dependency
order, each once. Only wiring."""

from __future__ import annotations

from prefect import flow, get_run_logger

from bulkflow.console import quiet_tracebacks
from bulkflow.errors import TerminalError
from bulkflow.settings import Settings
from tasks import events
from tasks.jobs import find_job_key, job_totals
from tasks.landing import (
    LandedFile,
    Outcome,
    content_sha256,
    earlier_import,
    find_new_files,
    import_batches,
    outcome_of,
    record_outcome,
    start_import,
)
from tasks.report import LandingSummary
from tasks.run_labels import label_run, landing_run_name
from tasks.runs import wait_for_run


@flow(name="landing-pickup", flow_run_name=landing_run_name, validate_parameters=True)
def landing_pickup(landing: str | None = None) -> dict[str, list[str]]:
    """Import the files under `<landing>/<resource>/` (and `<landing>/<profile>/<resource>/`,
    read with that profile) that no earlier pick-up dealt with.

    Each file becomes its own run of the import deployment (named after the file, tagged
    `via:landing`), which any runner or worker takes: users files first, then articles, then
    comments, at most `BULKFLOW_MAX_IMPORTS_PER_RESOURCE` files of one resource at once. A
    file whose content was imported before (same checksum) is skipped as a duplicate. A file
    that cannot be imported is recorded as failed and not tried again until it changes; a
    passing failure (database down, a crashed run) leaves it for the next pick-up. Returns the
    locations by outcome; fails at the end when any file failed, after trying all the others.
    Publishes a summary table: file, outcome, rows, rejected, import run.

    Args:
        landing: The landing folder or bucket prefix (an fsspec URL). Default: BULKFLOW_LANDING_URL.
    """
    quiet_tracebacks()  # the run's console shows its error in one line; the API keeps the traceback
    settings = Settings()
    label_run(None)
    pickup = _Pickup(settings)
    with events.alive():
        for batch in import_batches(
            find_new_files(settings, landing or settings.landing_root()), settings.max_imports_per_resource
        ):
            pickup.run(batch)
    pickup.summary.publish()
    outcomes = pickup.outcomes
    if outcomes["failed"] or outcomes["retry_later"]:
        raise TerminalError(
            f"{len(outcomes['failed'])} landed file(s) failed, {len(outcomes['retry_later'])} left for the next "
            f"pick-up: {', '.join(outcomes['failed'] + outcomes['retry_later'])}"
        )
    return outcomes


class _Pickup:
    """What one pick-up did with each file: outcomes, the summary table, the landing records."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outcomes: dict[str, list[str]] = {"imported": [], "duplicate": [], "failed": [], "retry_later": []}
        self.summary = LandingSummary()

    def run(self, batch: list[LandedFile]) -> None:
        """Start an import run for each new file of the batch, then wait for them all."""
        started = []
        for file in batch:
            sha256 = content_sha256(self.settings, file)
            earlier = earlier_import(self.settings, file.resource, sha256)
            if earlier is not None:
                same = f"the same content as {earlier}"
                self.summary.add(file.name, "duplicate", None, None, same)
                self._record(file, sha256, "duplicate", same, None)
            else:
                started.append((file, sha256, start_import(file)))
        for file, sha256, run in started:
            outcome, detail = outcome_of(wait_for_run(run.id, self.settings.landing_start_timeout_s))
            key = find_job_key(self.settings, str(run.id)) if outcome == "imported" else None
            totals = job_totals(self.settings, key) if key else None
            self.summary.add(file.name, outcome or "retry later", str(run.id), totals, detail)
            if outcome is None:
                get_run_logger().warning("%s will be tried again by the next pick-up: %s", file.location, detail)
                self.outcomes["retry_later"].append(file.location)
            else:
                self._record(file, sha256, outcome, detail, str(run.id))

    def _record(self, file: LandedFile, sha256: str, outcome: Outcome, detail: str | None, run_id: str | None) -> None:
        record_outcome(self.settings, file, sha256, outcome, detail, run_id)
        get_run_logger().info("%s: %s%s", file.location, outcome, f" ({detail})" if detail else "")
        self.outcomes[outcome].append(file.location)
