"""Helpers for reading database state in tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import polars as pl

from schemas.parameters import Format, ImportOptions, ResourceName
from schemas.reports import ImportReport

DATA = Path(__file__).resolve().parent.parent / "data"
"""The sample files."""
RESOURCE_TABLES = ("comments", "articles", "users")
IMPORT_BOOKKEEPING = ("import_rejects", "import_chunks", "import_runs", "import_jobs")
EVERY_TABLE = (
    *RESOURCE_TABLES,
    *IMPORT_BOOKKEEPING,
    "export_jobs",
    "landing_files",
    "export_tombstones",
    "export_truncations",
    "export_cursors",
    "import_history",
)


def truncate(*tables: str) -> None:
    sql(f"TRUNCATE {', '.join(tables)} CASCADE")


def reset_imports(*, rows: bool = True) -> None:
    """Forget every import (jobs, runs, chunks, rejects) and, unless `rows` is False, the
    rows they loaded: the database as before the first import."""
    truncate(*(RESOURCE_TABLES if rows else ()), *IMPORT_BOOKKEEPING)


def table(name: str) -> pl.DataFrame:
    """A whole table, sorted by id, for comparing database states: a resource's declared
    columns (not the transaction that last wrote each row, which differs run to run)."""
    from bulkflow.db import connect
    from bulkflow.settings import Settings
    from schemas import RESOURCES

    columns = ", ".join(RESOURCES[name].field_names) if name in RESOURCES else "*"
    with connect(Settings()) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {columns} FROM {name} ORDER BY id")
        return pl.from_arrow(cur.fetch_arrow_table())  # type: ignore[return-value]


def snapshot() -> dict[str, pl.DataFrame]:
    return {name: table(name) for name in ("users", "articles", "comments")}


def sql(statement: str) -> list[tuple]:
    from bulkflow.db import connect
    from bulkflow.settings import Settings

    with connect(Settings()) as conn, conn.cursor() as cur:
        cur.execute(statement)
        rows = cur.fetchall() if cur.description else []
        conn.commit()
        return rows


def s3():  # noqa: ANN201 - s3fs is untyped
    """The S3 file system the settings point at."""
    from bulkflow.settings import Settings
    from files.storage import filesystem

    return filesystem(Settings(), "s3://")[0]


TOTALS = ("rows_read", "inserted", "updated", "rejected", "rejects_by_rule")


@dataclass(frozen=True)
class ImportState:
    """What imports left in the database: the tables, every reject entry, and the totals
    of the reports' jobs. Two ways of running the same imports must leave the same state."""

    tables: dict[str, pl.DataFrame]
    rejects: list[tuple]
    totals: list[dict[str, object]]

    def assert_same(self, expected: ImportState) -> None:
        for name, frame in expected.tables.items():
            assert self.tables[name].equals(frame), name
        assert self.rejects == expected.rejects
        assert self.totals == expected.totals


def import_state(*reports: ImportReport) -> ImportState:
    """The state the imports of `reports` left."""
    rejects = sql(
        "SELECT j.resource, r.line, r.field, r.rule, r.message, r.value FROM import_rejects r "
        "JOIN import_jobs j USING (job_key) ORDER BY 1, 2, 3, 4"
    )
    totals = [report.job.model_dump(include=set(TOTALS)) for report in reports]
    return ImportState(snapshot(), rejects, totals)


def import_file(resource: str, source: Path | str, *, format: Format | None = None, **options: object) -> ImportReport:
    """Import `source` through the import flow, with `options` as `ImportOptions` fields."""
    from flows.import_flow import import_flow

    return import_flow(
        resource=cast(ResourceName, resource),
        source=str(source),
        format=format,
        options=ImportOptions.model_validate(options),
    )


def run_log(flow_run_id: str | None) -> list[str]:
    """The messages a flow run logged, as the Prefect API holds them (sent ones first)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    assert flow_run_id is not None
    APILogWorker.drain_all()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])))
    return [log.message for log in logs]


def rejects_of(job_key: str) -> list[tuple]:
    """Every reject entry of a job, in file order."""
    from bulkflow.db import connect
    from bulkflow.settings import Settings

    with connect(Settings()) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT line, field, rule, message, value, raw FROM import_rejects WHERE job_key = $1 "
            "ORDER BY line, rule, field",
            parameters=(job_key,),
        )
        return cur.fetchall()


SAMPLES = (("users", "users.csv"), ("articles", "articles.ndjson"), ("comments", "comments.ndjson"))
"""The sample files, in the order their references need."""


def load_samples() -> list[ImportReport]:
    """Import the sample files in order through the import flow; their reports."""
    from flows.import_flow import import_flow

    return [import_flow(resource=cast(ResourceName, resource), source=str(DATA / name)) for resource, name in SAMPLES]


def wait_for_event(
    api_url: str, name: str, resource_id: str, match: Callable[[dict[str, Any]], bool], timeout: float = 30
) -> dict[str, Any]:
    """The event of that name and resource whose payload `match`es, read back from the
    Prefect API (events are persisted asynchronously, and earlier tests emitted some too)."""
    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [resource_id]}, "order": "DESC"}, "limit": 50}
    deadline = time.monotonic() + timeout
    while True:
        found = httpx.post(f"{api_url}/events/filter", json=body, timeout=10).raise_for_status().json()["events"]
        matching = [event for event in found if match(event["payload"])]
        if matching:
            return dict(matching[0])
        assert time.monotonic() < deadline, f"no {name} event for {resource_id} matched"
        time.sleep(0.5)
