"""Import jobs: the identity of an import across runs, and its totals from the ledger."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from prefect import task
from prefect.logging import get_logger

from bulkflow.db import Cursor, connect, execute, fetch_one, query_one
from bulkflow.errors import ParameterError, first_line, is_retryable
from bulkflow.settings import Settings
from decisions.checks import CheckScope
from decisions.sql import (
    ASCII_PROBE,
    create_staging_sql,
    drop_staging_sql,
    first_load_probe,
    staging_chunk_index_sql,
    staging_table,
)
from files.formats import display_name
from files.staging import StagedSource
from schemas import declared_tables
from schemas.parameters import ImportOptions, WriteMode
from schemas.reports import COUNTS, FileReading, ImportReport, JobTotals
from schemas.resource import Resource
from tasks.limits import SlotClaim
from tasks.retrying import bookkeeping_task_options


@dataclass(frozen=True)
class ChunkLedger:
    """Where a chunk is recorded as committed, by whom, and how it writes: what a load task
    needs of its job."""

    job_key: str
    flow_run_id: str | None
    """The run committing the chunk (its report counts the chunks it committed itself)."""
    slot: SlotClaim | None = None
    """The write slot the run holds; a chunk commits only while it is held."""
    mode: WriteMode = "upsert"
    dry_run: bool = False
    """Predict what the rows would do to the table, and write nothing to it: only the
    chunk's ledger row and rejects are recorded (under the dry run's own job)."""
    staging: str | None = None
    """An all-or-nothing job's staging table: the chunk's accepted rows go there, with its
    ledger row and rejects, and reach the table only when the job is applied (or, in a
    dry run of a replace, are counted against the table, `tasks/apply.py`)."""


@dataclass(frozen=True)
class Job:
    key: str
    resource: Resource
    chunk_size: int
    """The chunk size of the job's first run: resumed runs must cut the file the same way."""
    done_chunks: frozenset[int]
    source_name: str
    earlier_runs: tuple[str, ...] = ()
    """Flow runs that worked on this job before and left it unfinished (a crashed or failed
    run this one resumes)."""
    first_load: bool = False
    """The table was empty when this run began, nothing of the job was committed, and the job
    holds the table's only write slot: whatever rows the table holds during the run are the
    job's own, accepted earlier in the file (and the database folds ASCII keys as polars
    does). Chunk checks then skip what only rows of others could change (`checks.py`)."""
    mode: WriteMode = "upsert"
    dry_run: bool = False
    atomic: bool = False
    applied: bool = False
    """An all-or-nothing job whose staged rows are in the table already."""
    cascade: bool = False
    """A replace deletes the rows referencing the rows it deletes too."""

    @property
    def staging(self) -> str | None:
        """The staging table of an all-or-nothing job. A dry run has none, but for a
        replace: the rows it accepts are staged (under its own job) so that the rows the
        replace would delete can be counted; they never reach the table."""
        wanted = self.atomic and (not self.dry_run or self.mode == "replace")
        return staging_table(self.key) if wanted else None

    @property
    def scope(self) -> CheckScope:
        """What the chunk checks need of the job."""
        return CheckScope(self.key, self.first_load, self.mode)

    def ledger(self, flow_run_id: str | None, slot: SlotClaim | None) -> ChunkLedger:
        """What the load tasks of `flow_run_id`, holding `slot`, need of the job."""
        return ChunkLedger(self.key, flow_run_id, slot, self.mode, self.dry_run, self.staging)


def default_job_key(resource: str, sha256: str) -> str:
    """Same resource + same content = same job, whatever the file is called."""
    return f"import:{resource}:{sha256}"


def job_key(resource: str, sha256: str, options: ImportOptions, flow_run_id: str | None) -> str:
    """The job an import run works on. The idempotency key (default: resource + content)
    names it; another write mode, or other read options (dialect, encoding, map, value
    formats), is another job; a dry run is a job of its own, which a real import never
    continues."""
    key = options.idempotency_key or default_job_key(resource, sha256)
    if options.mode != "upsert" and not options.idempotency_key:
        key += f":{options.mode}"
    read_as = options.chosen()
    if read_as and not options.idempotency_key:  # the same bytes read otherwise are other rows
        key += ":read-" + hashlib.sha256(json.dumps(read_as, sort_keys=True).encode()).hexdigest()[:12]
    return f"{key}:dry-run:{flow_run_id or uuid.uuid4()}" if options.dry_run else key


def previous_columns(settings: Settings, resource: str, profile: str | None) -> tuple[str, list[str]] | None:
    """(job key, columns) of the latest import (not a dry run) of `resource` with the same
    profile (or none), or None before the first."""
    row = query_one(
        settings,
        "SELECT job_key, columns FROM import_jobs WHERE resource = $1 AND profile IS NOT DISTINCT FROM $2 "
        "AND columns IS NOT NULL AND NOT dry_run ORDER BY created_at DESC LIMIT 1",
        (resource, profile),
    )
    return (row[0], json.loads(row[1])) if row else None


@task(**bookkeeping_task_options("open-job", "open-job-{resource.name}"))
def open_job(
    settings: Settings, resource: Resource, staged: StagedSource, options: ImportOptions, flow_run_id: str | None
) -> Job:
    """Create the job or find it again, and list the chunks earlier runs committed."""
    key = job_key(resource.name, staged.sha256, options, flow_run_id)
    source_name = display_name(staged.source, options.given_name)
    with connect(settings, declared=declared_tables()) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO import_jobs (job_key, resource, source, format, content_sha256, chunk_size, source_name, "
            "mode, dry_run, atomic, profile, columns) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
            "$12::jsonb) ON CONFLICT (job_key) DO NOTHING",
            parameters=(
                key,
                resource.name,
                staged.source,
                staged.declared_format,
                staged.sha256,
                options.rows_per_chunk(settings.chunk_size),
                source_name,
                options.mode,
                options.dry_run,
                options.all_or_nothing,
                options.profile,
                json.dumps(list(staged.columns.read)),
            ),
        )
        cur.execute(
            "SELECT resource, content_sha256, chunk_size, finished_at IS NOT NULL, mode, atomic, "
            "applied_at IS NOT NULL FROM import_jobs WHERE job_key = $1",
            parameters=(key,),
        )
        known_resource, known_sha, known_chunk_size, finished, known_mode, atomic, applied = fetch_one(cur)
        if (known_resource, known_sha) != (resource.name, staged.sha256):
            raise ParameterError(
                f"idempotency key {key!r} already names an import of other content "
                f"({known_resource}, sha256 {known_sha[:12]}…): use a new key"
            )
        if (known_mode, atomic) != (options.mode, options.all_or_nothing):
            raise ParameterError(
                f"idempotency key {key!r} already names an import with --mode {known_mode}"
                f"{' --atomic' if atomic else ''}: use a new key"
            )
        cur.execute(
            "SELECT flow_run_id FROM import_runs WHERE job_key = $1 AND flow_run_id IS DISTINCT FROM $2 "
            "ORDER BY started_at, flow_run_id",
            parameters=(key, flow_run_id),
        )
        # A finished job is repeated, not continued: its runs are named by the chunks they committed.
        earlier = () if finished else tuple(str(row[0]) for row in cur.fetchall())
        if flow_run_id:
            cur.execute(
                "INSERT INTO import_runs (flow_run_id, job_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                parameters=(flow_run_id, key),
            )
        cur.execute("SELECT chunk_index FROM import_chunks WHERE job_key = $1", parameters=(key,))
        done = frozenset(int(row[0]) for row in cur.fetchall())
        first_load = not done and settings.max_imports_per_resource == 1 and _empty_and_folds_ascii(cur, resource)
        job = Job(
            key,
            resource,
            int(known_chunk_size),
            done,
            source_name,
            earlier,
            first_load,
            options.mode,
            options.dry_run,
            options.all_or_nothing,
            bool(applied),
            options.cascade,
        )
        if job.staging and not job.applied:
            cur.execute(create_staging_sql(resource, job.staging))  # with the job: a re-run finds it
            cur.execute(staging_chunk_index_sql(job.staging))
        conn.commit()
    return job


def _empty_and_folds_ascii(cur: Cursor, resource: Resource) -> bool:
    cur.execute(first_load_probe(resource))
    empty, folded = fetch_one(cur)
    nk = resource.natural_key
    return bool(empty) and (nk is None or folded == pl.select(nk.normalize(pl.lit(ASCII_PROBE))).item())


def job_totals(settings: Settings, job_key: str) -> JobTotals:
    """What the job's committed chunks add up to so far, over all its runs."""
    return _chunk_totals(settings, job_key, None)


def _chunk_totals(settings: Settings, job_key: str, run_id: str | None) -> JobTotals:
    """The totals of the job's committed chunks: all of them (run_id None), or those `run_id` committed."""
    only_run = "" if run_id is None else " AND c.flow_run_id = $2"
    parameters: tuple[str, ...] = (job_key,) if run_id is None else (job_key, run_id)
    with connect(settings) as conn, conn.cursor() as cur:
        sums = ", ".join(f"coalesce(sum({count}), 0)" for count in COUNTS)
        cur.execute(f"SELECT count(*), {sums} FROM import_chunks c WHERE job_key = $1{only_run}", parameters=parameters)
        chunks, *counts = (int(v) for v in fetch_one(cur))
        cur.execute(
            "SELECT r.rule, count(*) FROM import_rejects r JOIN import_chunks c USING (job_key, chunk_index) "
            f"WHERE job_key = $1{only_run} GROUP BY r.rule ORDER BY 2 DESC, 1",
            parameters=parameters,
        )
        by_rule = {rule: int(n) for rule, n in cur.fetchall()}
    return JobTotals(chunks=chunks, rejects_by_rule=by_rule, **dict(zip(COUNTS, counts)))


def run_counts(settings: Settings, job_key: str, run_id: str | None) -> RunCounts:
    """What one run of the job did, apart from what the job's other runs had committed."""
    job = job_totals(settings, job_key)
    own = _chunk_totals(settings, job_key, run_id) if run_id else JobTotals()
    others = query_one(
        settings,
        "SELECT coalesce(array_agg(DISTINCT flow_run_id) FILTER (WHERE flow_run_id IS NOT NULL), '{}') "
        "FROM import_chunks WHERE job_key = $1 AND flow_run_id IS DISTINCT FROM $2",
        (job_key, run_id),
    )
    noted = query_one(
        settings, "SELECT deleted, deleted_dependents, budget_exceeded FROM import_jobs WHERE job_key = $1", (job_key,)
    )
    deleted, dependents, budget = (int(noted[0]), json.loads(noted[1]), noted[2]) if noted else (0, {}, None)
    return RunCounts(
        own=own,
        job=job,
        committed_by=sorted(str(r) for r in (others[0] if others else [])),
        deleted=deleted,
        deleted_dependents=dependents,
        budget_exceeded=budget,
    )


@dataclass(frozen=True)
class RunCounts:
    own: JobTotals
    """The chunks the run committed itself."""
    job: JobTotals
    committed_by: list[str]
    """The other runs that committed chunks of the job."""
    deleted: int = 0
    deleted_dependents: dict[str, int] = field(default_factory=dict)
    budget_exceeded: str | None = None

    @property
    def already_committed(self) -> JobTotals:
        """The chunks of the job's other runs."""
        return JobTotals(chunks=self.job.chunks - self.own.chunks, rows_read=self.job.rows_read - self.own.rows_read)

    @property
    def rows_read(self) -> int:
        return self.job.rows_read

    def report_fields(self) -> dict[str, Any]:
        """The counters a run's report and its API status share (`ImportReport`, `ImportJob`)."""
        own = self.own
        return {
            "rows_read": self.rows_read,
            "inserted": own.inserted,
            "updated": own.updated,
            "unchanged": own.unchanged,
            "rejected": own.rejected,
            "rejects_by_rule": own.rejects_by_rule,
            "already_committed": self.already_committed.rows_read,
            "already_committed_by": self.committed_by,
            "deleted": self.deleted,
            "deleted_dependents": self.deleted_dependents,
            "budget_exceeded": self.budget_exceeded,
            "job": self.job,
        }


@task(**bookkeeping_task_options("close-job", "close-job-{job.resource.name}"))
def close_job(
    settings: Settings,
    job: Job,
    staged: StagedSource,
    flow_run_id: str | None,
    duration_s: float,
    reading: FileReading | None = None,
) -> ImportReport:
    """The run's own counts and the job's totals, read back from the ledger and the rejects."""
    counts = run_counts(settings, job.key, flow_run_id)
    execute(
        settings,
        "UPDATE import_jobs SET finished_at = now(), failed_at = NULL, failure_class = NULL, "
        "failure_retryable = NULL, failure_message = NULL WHERE job_key = $1",
        (job.key,),
    )
    return ImportReport(
        **counts.report_fields(),
        chunks=counts.job.chunks,
        chunks_skipped=counts.already_committed.chunks,
        job_key=job.key,
        resource=job.resource.name,
        source=staged.source,
        source_name=job.source_name,
        flow_run_id=flow_run_id,
        status="completed",
        mode=job.mode,
        dry_run=job.dry_run,
        atomic=job.atomic,
        continues_runs=list(job.earlier_runs),
        duration_s=round(duration_s, 3),
        rows_per_s=round(counts.rows_read / duration_s, 1) if duration_s > 0 else 0.0,
        error_rate=counts.own.rejected_share(),
        reading=reading or FileReading(),
    )


def set_aside(settings: Settings, job: Job, flow_run_id: str | None, error: BaseException) -> str:
    """Move an abandoned job (its budget spent) to a key of its own, with its chunks, rejects
    and runs, and drop what it staged: its reject report stays readable by run id, and the
    next import of the file starts from the beginning. Returns the new key."""
    aside = f"{job.key}:aborted:{flow_run_id or uuid.uuid4()}"
    columns = (
        "resource, source, format, content_sha256, chunk_size, source_name, mode, dry_run, atomic, created_at, "
        "profile, columns"
    )
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO import_jobs (job_key, {columns}, finished_at, failed_at, failure_class, failure_retryable, "
            f"failure_message) SELECT $2, {columns}, now(), now(), $3, false, $4 "
            "FROM import_jobs WHERE job_key = $1",
            parameters=(job.key, aside, type(error).__name__, first_line(error)),
        )
        for ledger in ("import_chunks", "import_rejects", "import_runs"):
            cur.execute(f"UPDATE {ledger} SET job_key = $2 WHERE job_key = $1", parameters=(job.key, aside))
        cur.execute("DELETE FROM import_jobs WHERE job_key = $1", parameters=(job.key,))
        if job.staging:
            cur.execute(drop_staging_sql(job.staging))
        conn.commit()
    return aside


def record_failure(settings: Settings, job: Job, error: BaseException) -> None:
    """Write on the job how its run failed: the error's class, whether a retry may cure it,
    its first line (for whoever reads the job later: the API, an operator), and drop what a
    dry run staged (nothing continues a dry run's job). Best effort: the database may be
    what failed."""
    try:
        execute(
            settings,
            "UPDATE import_jobs SET failed_at = now(), failure_class = $2, failure_retryable = $3, "
            "failure_message = $4 WHERE job_key = $1",
            (job.key, type(error).__name__, is_retryable(error), first_line(error)),
        )
        if job.dry_run and job.staging:
            execute(settings, drop_staging_sql(job.staging))
    except Exception as unrecorded:  # noqa: BLE001 - the run fails with its own error all the same
        get_logger(__name__).warning("could not record the failure of job %s: %s", job.key, first_line(unrecorded))


def find_job_key(settings: Settings, run_or_job: str) -> str | None:
    """Resolve a flow run id or a job key to the job key."""
    row = query_one(
        settings,
        "SELECT job_key FROM import_jobs WHERE job_key = $1 UNION SELECT job_key FROM import_runs WHERE flow_run_id = $1",
        (run_or_job,),
    )
    return row[0] if row else None


_REJECTS_SQL = (
    "SELECT line, field, rule, message, value, raw FROM import_rejects WHERE job_key = $1 ORDER BY line, rule, field"
)


def read_rejects(settings: Settings, job_key: str, limit: int) -> pl.DataFrame:
    """The job's first `limit` reject entries in file order."""
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(f"{_REJECTS_SQL} LIMIT {int(limit)}", parameters=(job_key,))
        return pl.from_arrow(cur.fetch_arrow_table())  # type: ignore[return-value]  # a table in, a DataFrame out


def iter_rejects(settings: Settings, job_key: str) -> Iterator[pl.DataFrame]:
    """All the job's reject entries in file order, batch by batch (bounded memory)."""
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(_REJECTS_SQL, parameters=(job_key,))
        for batch in cur.fetch_record_batch():
            yield pl.from_arrow(batch)  # type: ignore[misc]  # a record batch in, a DataFrame out


_REJECTED_RECORDS_SQL = (
    "SELECT DISTINCT ON (line) raw FROM import_rejects WHERE job_key = $1 ORDER BY line, rule, field"
)


def iter_rejected_records(settings: Settings, job_key: str) -> Iterator[list[str | None]]:
    """The record of each line the job rejected, as read, in file order, batch by batch."""
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(_REJECTED_RECORDS_SQL, parameters=(job_key,))
        for batch in cur.fetch_record_batch():
            yield batch.column(0).to_pylist()


def job_source(settings: Settings, job_key: str) -> tuple[str, str]:
    """(resource, format) of the job's file."""
    row = query_one(settings, "SELECT resource, format FROM import_jobs WHERE job_key = $1", (job_key,))
    if row is None:
        raise ParameterError(f"no import job {job_key!r}")
    return str(row[0]), str(row[1])
