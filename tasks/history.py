"""The load history: one entry per finished import run (`import_history`), and the export
jobs (`export_jobs`), listed newest first by `bulkflow history` and the API. Kept in
bulkflow's own tables for BULKFLOW_HISTORY_DAYS, whatever Prefect keeps of its runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast, get_args

from bulkflow.db import connect, execute
from bulkflow.errors import AbandonedImport, ParameterError, first_line
from bulkflow.settings import Settings
from schemas import get_resource
from schemas.reports import ExportHistoryEntry, ExportManifest, HistoryStatus, ImportHistoryEntry, ImportReport


@dataclass(frozen=True)
class HistoryQuery:
    """Which entries to list: of one resource, started since a time, of one status; the
    `limit` newest."""

    resource: str | None = None
    since: datetime | None = None
    status: HistoryStatus | None = None
    limit: int = 50

    @classmethod
    def checked(cls, resource: str | None, since: str | None, status: str | None, limit: int = 50) -> HistoryQuery:
        """The query of the history's filters as given (`since` ISO 8601, UTC without a
        zone); ParameterError naming what is wrong."""
        if resource is not None:
            get_resource(resource)
        statuses = get_args(HistoryStatus)
        if status is not None and status not in statuses:
            raise ParameterError(f"unknown status {status!r}: choose from {', '.join(statuses)}")
        if not 1 <= limit <= MAX_LISTED:
            raise ParameterError(f"limit must be 1 to {MAX_LISTED}, not {limit}")
        started = None
        if since is not None:
            try:
                started = datetime.fromisoformat(since)
            except ValueError:
                raise ParameterError(
                    f"cannot read since {since!r}: write a time such as 2026-12-01T00:00:00Z"
                ) from None
            started = started if started.tzinfo else started.replace(tzinfo=UTC)
        return cls(resource, started, cast(HistoryStatus | None, status), limit)


MAX_LISTED = 10_000


@dataclass(frozen=True)
class RunStart:
    """What an import run knows of itself before it has a report."""

    flow_run_id: str
    resource: str
    source_name: str
    via: str
    started_at: datetime


def import_status(report: ImportReport) -> HistoryStatus:
    if report.dry_run:
        return "dry_run"
    return "completed_with_rejects" if report.rejected else "completed"


def record_import(
    settings: Settings, start: RunStart, report: ImportReport | None, error: BaseException | None
) -> None:
    """Add the run's entry (its report's counts, or the error it failed with). Best effort:
    the history never fails an import, and a database that is down is the run's own error."""
    try:
        entry = _import_entry(settings, start, report, error)
        execute(
            settings,
            "INSERT INTO import_history (flow_run_id, resource, status, started_at, entry) "
            "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (flow_run_id) DO UPDATE SET status = EXCLUDED.status, "
            "finished_at = now(), entry = EXCLUDED.entry",
            (entry.flow_run_id, entry.resource, entry.status, entry.started_at, entry.model_dump_json()),
        )
    except Exception as unrecorded:  # noqa: BLE001 - the import's own outcome stands
        logging.getLogger(__name__).warning(
            "could not add run %s to the history: %s", start.flow_run_id, first_line(unrecorded)
        )


def _import_entry(
    settings: Settings, start: RunStart, report: ImportReport | None, error: BaseException | None
) -> ImportHistoryEntry:
    finished = datetime.now(UTC)
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT j.job_key, j.content_sha256, j.profile, (SELECT 'line ' || r.line || ', ' || r.field || ': ' "
            "|| r.message FROM import_rejects r WHERE r.job_key = j.job_key ORDER BY r.line LIMIT 1) "
            "FROM import_runs u JOIN import_jobs j USING (job_key) WHERE u.flow_run_id = $1",
            parameters=(start.flow_run_id,),
        )
        job_key, sha256, profile, first_reject = cur.fetchone() or (None, None, None, None)
    common = {
        "flow_run_id": start.flow_run_id,
        "resource": start.resource,
        "source_name": start.source_name,
        "sha256": sha256,
        "profile": profile,
        "job_key": job_key,
        "started_at": start.started_at,
        "finished_at": finished,
        "duration_s": round((finished - start.started_at).total_seconds(), 3),
        "via": start.via,
    }
    if report is None:
        status: HistoryStatus = "aborted" if isinstance(error, AbandonedImport) else "failed"
        return ImportHistoryEntry(**common, status=status, first_error=first_line(error) if error else None)
    counts = report.model_dump(include={"rows_read", "inserted", "updated", "unchanged", "rejected", "deleted"})
    return ImportHistoryEntry(
        **common | {"source_name": report.source_name, "profile": report.reading.profile},
        **counts,
        status=import_status(report),
        first_error=first_reject if report.rejected else None,
    )


_IMPORTS = (
    "SELECT entry FROM import_history WHERE ($1 = '' OR resource = $1) "
    "AND ($2 = '' OR started_at >= $2::timestamptz) AND ($3 = '' OR status = $3) "
    "ORDER BY started_at DESC, flow_run_id LIMIT $4"
)

_EXPORTS = (
    "SELECT flow_run_id, resource, format, status, manifest, location, failure_message, created_at, finished_at, "
    "started_via, since IS NOT NULL, cursor_name FROM (SELECT *, CASE WHEN finished_at IS NOT NULL THEN 'completed' "
    "WHEN failed_at IS NOT NULL THEN 'failed' ELSE 'running' END AS status FROM export_jobs) e "
    "WHERE ($1 = '' OR resource = $1) AND ($2 = '' OR created_at >= $2::timestamptz) "
    "AND ($3 = '' OR status = $3) ORDER BY created_at DESC, flow_run_id LIMIT $4"
)


def list_imports(settings: Settings, query: HistoryQuery) -> list[ImportHistoryEntry]:
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(_IMPORTS, parameters=_bound(query))
        return [ImportHistoryEntry.model_validate_json(row[0]) for row in cur.fetchall()]


def list_exports(settings: Settings, query: HistoryQuery) -> list[ExportHistoryEntry]:
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(_EXPORTS, parameters=_bound(query))
        rows = cur.fetchall()
    entries = []
    for job_id, resource, fmt, status, manifest, location, error, started, finished, via, incremental, name in rows:
        written = ExportManifest.model_validate_json(manifest) if manifest else None
        entries.append(
            ExportHistoryEntry(
                job_id=job_id,
                resource=resource,
                format=fmt,
                status=status,
                rows=written.rows if written else None,
                deleted=written.deleted if written else 0,
                bytes=written.bytes if written else None,
                incremental=incremental,
                cursor_name=name,
                location=location,
                first_error=error,
                started_at=started,
                finished_at=finished,
                duration_s=written.duration_s if written else None,
                via=via,
            )
        )
    return entries


def _bound(query: HistoryQuery) -> tuple[object, ...]:
    """The query's filters as text, '' where there is none (a NULL parameter has no type to bind)."""
    since = query.since.isoformat() if query.since else ""
    return (query.resource or "", since, query.status or "", query.limit)
