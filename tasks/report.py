"""What an import tells its operators: logs, Prefect artifacts, and local progress listeners."""

from __future__ import annotations

import re
from collections.abc import Callable
from uuid import UUID

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.logging import get_run_logger

from schemas.reports import ChunkResult, ImportReport
from schemas.resource import Resource

ProgressListener = Callable[[int, float], None]
"""Called with (rows done, fraction of the file done) after every chunk; the CLI draws a bar."""

_listeners: list[ProgressListener] = []


def add_progress_listener(listener: ProgressListener) -> Callable[[], None]:
    """Register a local listener; returns the function that removes it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


class ImportProgress:
    """A Prefect progress artifact plus per-chunk log lines (rows/s, error rate)."""

    def __init__(self, resource: Resource, source: str) -> None:
        self.rows_done = 0
        self.fraction = 0.0
        created = create_progress_artifact(
            progress=0.0,
            key=artifact_key("import", resource.name, "progress"),
            description=f"Import of {source} into {resource.name}",
        )
        assert isinstance(created, UUID)  # the sync call returns the id, not a coroutine
        self.artifact_id = created
        self._notify()

    def skipped(self, rows: int, fraction: float) -> None:
        """A chunk an earlier run committed: counted as done without loading it."""
        self.rows_done += rows
        self.fraction = fraction

    def chunk_done(self, result: ChunkResult, seconds: float, fraction: float) -> None:
        self.rows_done += result.rows_read
        self.fraction = fraction
        logger = get_run_logger()
        verb = "already committed" if result.skipped else "committed"
        rate = result.rows_read / seconds if seconds > 0 and not result.skipped else 0.0
        logger.info(
            "chunk %d %s: %d rows, %d inserted, %d updated, %d rejected (error_rate %.4f, %.0f rows/s)",
            result.index, verb, result.rows_read, result.inserted, result.updated, result.rejected,
            result.rejected_share(), rate,
        )
        update_progress_artifact(self.artifact_id, round(100.0 * self.fraction, 1))
        self._notify()

    def _notify(self) -> None:
        for listener in list(_listeners):
            listener(self.rows_done, self.fraction)


def publish_report(report: ImportReport, first_rejects: list[dict[str, object]]) -> None:
    """Log the run's totals and publish the summary and first rejects as table artifacts."""
    logger = get_run_logger()
    logger.info(
        "import %s done: %d rows read, %d inserted, %d updated, %d rejected in %.2fs "
        "(%.0f rows/s, error_rate %.4f)",
        report.resource, report.rows_read, report.inserted, report.updated, report.rejected,
        report.duration_s, report.rows_per_s, report.error_rate,
    )
    summary = report.model_dump(exclude={"rejects_by_rule"})
    rows = [{"metric": k, "value": str(v)} for k, v in summary.items()]
    rows += [{"metric": f"rejects: {rule}", "value": str(n)} for rule, n in report.rejects_by_rule.items()]
    create_table_artifact(
        table=rows,
        key=artifact_key("import", report.resource, "report"),
        description=f"Import report for {report.source}",
    )
    if first_rejects:
        create_table_artifact(
            table=first_rejects,
            key=artifact_key("import", report.resource, "rejects"),
            description=f"First {len(first_rejects)} rejects of {report.source} "
            f"(all of them: `bulkflow rejects {report.job_key}`)",
        )
