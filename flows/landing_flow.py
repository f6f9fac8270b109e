"""The landing pick-up: each newly landed file becomes its own import run, in dependency
order, each once. Only wiring."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from dataclasses import dataclass
from itertools import groupby

from prefect import get_run_logger, tags
from prefect.client.schemas.objects import State

from bulkflow.console import quiet_tracebacks
from bulkflow.errors import TerminalError, is_retryable
from bulkflow.settings import Settings
from flows.import_flow import import_flow
from tasks import events
from tasks.jobs import find_job_key, job_totals
from tasks.landing import (
    LandedFile,
    Outcome,
    content_sha256,
    earlier_import,
    find_new_files,
    import_batches,
    import_parameters,
    imported_here,
    outcome_of,
    outcome_of_state,
    record_outcome,
    start_import,
)
from tasks.limits import TableTurn, imports_take, turns_of
from tasks.prefect_defaults import flow, own_heartbeat_only
from tasks.report import LandingSummary
from tasks.retrying import bookkeeping_step
from tasks.run_labels import label_run, landing_run_name, run_tags
from tasks.runs import wait_for_run


@flow(name="landing-pickup", flow_run_name=landing_run_name, validate_parameters=True)
def landing_pickup(landing: str | None = None) -> dict[str, list[str]]:
    """Import the files under `<landing>/<resource>/` (and `<landing>/<profile>/<resource>/`,
    read with that profile) that no earlier pick-up dealt with.

    Each file becomes its own import run (named after the file, tagged `via:landing`, a child
    run of the pick-up): a file up to `BULKFLOW_LANDING_INLINE_BYTES` is imported by the
    pick-up itself, a larger one by a run of the import deployment, which any runner or worker
    takes. Users files first, then articles, then comments, each resource's in name order, at
    most `BULKFLOW_MAX_IMPORTS_PER_RESOURCE` files of one resource working on its table at once
    (while they do, the next file's run gets under way). A
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
        new = pickup.screen(find_new_files(settings, landing or settings.landing_root()))
        batches = import_batches(new, settings.max_imports_per_resource)
        for _, of_one_resource in groupby(batches, key=lambda batch: batch[0].resource):
            pickup.run(list(of_one_resource))
        pickup.record()
    outcomes = pickup.outcomes
    if outcomes["failed"] or outcomes["retry_later"]:
        raise TerminalError(
            f"{len(outcomes['failed'])} landed file(s) failed, {len(outcomes['retry_later'])} left for the next "
            f"pick-up: {', '.join(outcomes['failed'] + outcomes['retry_later'])}"
        )
    return outcomes


def _import_here(file: LandedFile) -> tuple[str, State]:
    """The file imported by this process, as a subflow run of the pick-up tagged
    `via:landing`: (its run id, its final state)."""
    with tags(*run_tags(file.resource, "landing")), own_heartbeat_only():  # the pick-up's run has one
        state = import_flow(**import_parameters(file), return_state=True)
    return str(state.state_details.flow_run_id), state


def _retryable(state: State) -> bool:
    """Whether a failed import may succeed on a later try (the database was away, say)."""
    error = state.result(raise_on_failure=False) if state.is_failed() else None
    return isinstance(error, BaseException) and is_retryable(error)


@dataclass
class _Ending:
    """What became of one landed file in this pick-up."""

    sha256: str
    outcome: Outcome | None
    """None: left for the next pick-up."""
    detail: str | None
    run_id: str | None


class _Pickup:
    """What one pick-up did with each file: outcomes, the summary table, the landing records.

    The files' checksums are taken before any import and the outcomes recorded after the
    last one, so that a pick-up's own task runs never come between two imports it runs
    itself: a subflow run created right after a task run of its parent waited up to 2 s for
    the Prefect server (SQLite) to create it. A pick-up that dies before recording finds
    its imported files again the next time, as duplicates of their own imports."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.outcomes: dict[str, list[str]] = {"imported": [], "duplicate": [], "failed": [], "retry_later": []}
        self.listed: list[LandedFile] = []
        self.endings: dict[LandedFile, _Ending] = {}
        self.sha256: dict[LandedFile, str] = {}

    def screen(self, files: list[LandedFile]) -> list[LandedFile]:
        """The files to import, in landing order; the others are duplicates of a content
        imported before, or of an earlier file of this pick-up."""
        self.listed = files
        new: list[LandedFile] = []
        first_of: dict[tuple[str, str], LandedFile] = {}
        for file in files:
            sha256 = bookkeeping_step(content_sha256, imported_here(self.settings, file))(self.settings, file)
            earlier = earlier_import(self.settings, file.resource, sha256)
            twin = first_of.setdefault((file.resource, sha256), file)
            if earlier is not None or twin is not file:
                same = f"the same content as {earlier or f'{twin.name}, in this pick-up'}"
                self.endings[file] = _Ending(sha256, "duplicate", same, None)
            else:
                self.sha256[file] = sha256
                new.append(file)
        return new

    def run(self, batches: list[list[LandedFile]]) -> None:
        """Import the batches of files of one resource, in landing order: the files of a
        batch may work on the table at once, once every file of the batch before ended its
        table work (`tasks/limits.py`, `TableTurn`). One file more than a batch holds is
        under way meanwhile: its run's Prefect bookkeeping overlaps the table work before it."""
        files = [file for batch in batches for file in batch]
        turns = turns_of([len(batch) for batch in batches])
        workers = max(len(batch) for batch in batches) + 1
        with ThreadPoolExecutor(workers, thread_name_prefix="landing-import") as pool:
            # each in a copy of this run's context: the imports are subflow runs of the pick-up
            endings = [pool.submit(copy_context().run, self._import, file, turn) for file, turn in zip(files, turns)]
            for file, ending in zip(files, endings):
                self._end(file, *ending.result())

    def _import(self, file: LandedFile, turn: TableTurn) -> tuple[str, Outcome | None, str | None]:
        """A small file imported here, as a subflow run; a larger one by a run of the import
        deployment, which any runner or worker takes, waited for. (run id, outcome, detail)"""
        if imported_here(self.settings, file):
            with imports_take(turn):
                run_id, state = _import_here(file)
            return run_id, *outcome_of_state(state, retryable=_retryable(state))
        with turn.taken():
            run = start_import(file)
            ended = wait_for_run(run.id, self.settings.landing_start_timeout_s)
        return str(run.id), *outcome_of(ended)

    def _end(self, file: LandedFile, run_id: str, outcome: Outcome | None, detail: str | None) -> None:
        self.endings[file] = _Ending(self.sha256[file], outcome, detail, run_id)

    def record(self) -> None:
        """In landing order: the summary table, and what became of each file (recorded, so
        that later pick-ups skip it, unless it is left for the next one)."""
        summary = LandingSummary()
        for file in self.listed:
            ending = self.endings[file]
            key = find_job_key(self.settings, ending.run_id) if ending.outcome == "imported" and ending.run_id else None
            totals = job_totals(self.settings, key) if key else None
            summary.add(file.name, ending.outcome or "retry later", ending.run_id, totals, ending.detail)
            if ending.outcome is None:
                get_run_logger().warning("%s will be tried again by the next pick-up: %s", file.location, ending.detail)
                self.outcomes["retry_later"].append(file.location)
                continue
            bookkeeping_step(record_outcome, imported_here(self.settings, file))(
                self.settings, file, ending.sha256, ending.outcome, ending.detail, ending.run_id
            )
            detail = f" ({ending.detail})" if ending.detail else ""
            get_run_logger().info("%s: %s%s", file.location, ending.outcome, detail)
            self.outcomes[ending.outcome].append(file.location)
        summary.publish()
