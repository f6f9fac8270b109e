"""What an import tells its operators: logs, Prefect artifacts, and local progress listeners."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_UI_URL

from schemas.reports import ChunkResult, ImportReport, JobTotals
from schemas.resource import Resource

ProgressListener = Callable[[int, float, float], None]
"""Called with (rows done, fraction of the file they are, position of the bar) as chunks move
on; the CLI draws a bar."""
READ_SHARE, CHECKED_SHARE = 0.4, 0.7
"""How far a chunk's share of the bar moves once it is read and validated, and once checked
against the database (all of it once committed): a file of one chunk moves too."""

PROGRESS_EVERY = 0.5
"""Seconds at least between two updates of the progress artifact, unless it reaches 100:
each is a request the Prefect server answers, often on the cores the import runs on (a
1M-row file has 20 chunks, a 10M-row file 200)."""

_listeners: list[ProgressListener] = []


def add_progress_listener(listener: ProgressListener) -> Callable[[], None]:
    """Register a local listener; returns the function that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits and dashes, at most 100) that keeps
    its last part whole: `import-users-partner-42-csv-report`."""
    slugs = [re.sub(r"[^a-z0-9-]+", "-", part.lower()).strip("-") for part in parts]
    *head, last = slugs
    prefix = "-".join(head)[: 99 - len(last)].strip("-")
    return f"{prefix}-{last}" if prefix else last


@dataclass
class Every:
    """Says when something sent as it happens is due again: at most once in `seconds`,
    always the first time and the last."""

    seconds: float
    sent_at: float | None = None

    def due(self, now: float, *, last: bool = False) -> bool:
        """Whether to send at `now` (a monotonic clock); if so, counted as sent."""
        if not last and self.sent_at is not None and now - self.sent_at < self.seconds:
            return False
        self.sent_at = now
        return True


class ImportProgress:
    """A Prefect progress artifact plus per-chunk log lines (rows/s, error rate). The artifact
    is made when the first chunk is committed; a file known to be of one chunk at most
    (`with_artifact=False`) makes none: its bar would appear at 100 just before its report."""

    def __init__(self, resource: Resource, source_name: str, dry_run: bool = False, with_artifact: bool = True) -> None:
        self.dry_run = dry_run
        self.with_artifact = with_artifact
        self.key = artifact_key("import", resource.name, source_name, "progress")
        self.description = f"Import of {source_name} into {resource.name}"
        self.artifact_id: UUID | None = None
        self.updates = Every(PROGRESS_EVERY)
        self.rows_done = 0
        self.fraction = 0.0
        """Of the file, in the chunks committed (or found committed)."""
        self.read_to = self.checked_to = 0.0
        """Of the file, in the chunks read and validated, and in those checked too."""
        self._notify()

    def read(self, fraction: float) -> None:
        """The chunks up to `fraction` of the file are read and validated."""
        self.read_to = max(self.read_to, fraction)
        self._notify()

    def checked(self, fraction: float) -> None:
        """The chunks up to `fraction` of the file are checked against the database."""
        self.checked_to = max(self.checked_to, fraction)
        self._notify()

    def skipped(self, rows: int, fraction: float) -> None:
        """A chunk an earlier run committed: counted as done without loading it."""
        self.rows_done += rows
        self.fraction = fraction
        self._notify()

    @property
    def shown(self) -> float:
        """The bar's position: committed chunks whole, the ones in flight in part."""
        checked = max(self.checked_to - self.fraction, 0.0)
        read = max(self.read_to - max(self.checked_to, self.fraction), 0.0)
        return min(self.fraction + CHECKED_SHARE * checked + READ_SHARE * read, 1.0)

    def chunk_done(self, result: ChunkResult, seconds: float, fraction: float) -> None:
        self.rows_done += result.rows_read
        self.fraction = fraction
        logger = get_run_logger()
        verb = "already committed" if result.skipped else "predicted" if self.dry_run else "committed"
        rate = result.rows_read / seconds if seconds > 0 and not result.skipped else 0.0
        logger.info(
            "chunk %d %s: %d rows, %d inserted, %d updated, %d unchanged, %d rejected (error_rate %.4f, %.0f rows/s)",
            result.index,
            verb,
            result.rows_read,
            result.inserted,
            result.updated,
            result.unchanged,
            result.rejected,
            result.rejected_share(),
            rate,
        )
        self._show(round(100.0 * self.fraction, 1))
        self._notify()

    def _show(self, percent: float) -> None:
        if not self.with_artifact:
            return
        if not self.updates.due(time.monotonic(), last=percent >= 100.0):
            return
        if self.artifact_id is not None:
            update_progress_artifact(self.artifact_id, percent)
            return
        created = create_progress_artifact(progress=percent, key=self.key, description=self.description)
        assert isinstance(created, UUID)  # the sync call returns the id, not a coroutine
        self.artifact_id = created

    def _notify(self) -> None:
        for listener in list(_listeners):
            listener(self.rows_done, self.fraction, self.shown)


def publish_report(report: ImportReport, first_rejects: list[dict[str, object]]) -> None:
    """Log the run's totals and publish the summary and first rejects as table artifacts."""
    logger = get_run_logger()
    kind = "dry run of import" if report.dry_run else "import"
    logger.info(
        "%s %s done: %d rows read, %d inserted, %d updated, %d unchanged, %d rejected, %d already committed by "
        "earlier runs in %.2fs (%.0f rows/s, error_rate %.4f)",
        kind,
        report.resource,
        report.rows_read,
        report.inserted,
        report.updated,
        report.unchanged,
        report.rejected,
        report.already_committed,
        report.duration_s,
        report.rows_per_s,
        report.error_rate,
    )
    summary = report.model_dump(exclude={"rejects_by_rule", "job", "reading"})
    rows = [{"metric": k, "value": str(v)} for k, v in summary.items()]
    rows += [{"metric": f"read: {label}", "value": text} for label, text in report.reading.notes()]
    rows += [{"metric": f"rejects: {rule}", "value": str(n)} for rule, n in report.rejects_by_rule.items()]
    job = report.job.model_dump(exclude={"rejects_by_rule"})
    rows += [{"metric": f"job: {k}", "value": str(v)} for k, v in job.items()]
    # a dry run's artifacts are its own: they never stand for the file's real import
    prefix, what = ("dry-run-", "Dry run report") if report.dry_run else ("", "Import report")
    create_table_artifact(
        table=rows,
        key=artifact_key("import", report.resource, report.source_name, prefix + "report"),
        description=f"{what} for {report.source_name} ({report.resource})",
    )
    if first_rejects:
        create_table_artifact(
            table=first_rejects,
            key=artifact_key("import", report.resource, report.source_name, prefix + "rejects"),
            description=f"First {len(first_rejects)} rejects of {report.source_name} "
            f"(all of them: `bulkflow rejects {report.rejects_handle}`)",
        )


class LandingSummary:
    """The table a landing pick-up publishes: one row per file it looked at."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []

    def add(
        self, file_name: str, outcome: str, import_run_id: str | None, totals: JobTotals | None, detail: str | None
    ) -> None:
        """One file: what became of it, and why (a failure's reason, what a duplicate duplicates)."""
        self.rows.append(
            {
                "file": file_name,
                "outcome": outcome,
                "why": detail or "",
                "rows": totals.rows_read if totals else "",
                "rejected": totals.rejected if totals else "",
                "import run": _run_link(import_run_id),
            }
        )

    def publish(self) -> None:
        if self.rows:
            create_table_artifact(table=self.rows, key="landing-pickup-summary", description="Files of this pick-up")


def _run_link(run_id: str | None) -> str:
    """A Markdown link to the run in the Prefect UI when its address is known, else the id."""
    if run_id is None:
        return ""
    ui = PREFECT_UI_URL.value()
    return f"[{run_id}]({ui}/runs/flow-run/{run_id})" if ui else run_id
