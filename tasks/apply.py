"""The end of an all-or-nothing job (`--atomic`): its staged rows reach the table in ONE
transaction, or not at all.

Invariants: the chunks were staged exactly once each (the staged rows, the rejects and
the ledger row of a chunk commit together, `load.py`); the apply writes every staged row,
sets the ledger's counts, marks the job applied and drops the staging table in a single
transaction. A crash before its commit leaves the table as before the import and the
staging table whole, so a re-run skips every staged chunk and applies once; after it, a
re-run finds the job applied and writes nothing. The table is locked against other
writers for the apply only (readers go on), so what it counts is what it writes.
"""

from __future__ import annotations

import json

import polars as pl
from prefect import task

from bulkflow.db import Connection, Cursor, connect, fetch_one, tune_session
from bulkflow.errors import ReplaceRefused
from bulkflow.settings import Settings
from decisions.checks import frame_of, missing_message
from decisions.decide import NOT_FOUND, presence_rule, refusal_message, taken_refusal
from decisions.sql import (
    analyze_sql,
    collect_dependents_sql,
    collect_gone_sql,
    count_gone_sql,
    count_staged_rejects_sql,
    delete_gone_sql,
    drop_staging_sql,
    gone_table_sql,
    in_table_query,
    lock_for_apply_sql,
    missing_reference_query,
    predict_sql,
    referenced_gone_sql,
    staged_rejects_sql,
    taken_query,
    unstage_sql,
)
from schemas import dependents_of
from schemas.parameters import PRESENCE_MODES
from schemas.reports import Written
from schemas.resource import Resource
from tasks.jobs import Job
from tasks.limits import SlotClaim, check_slot_held
from tasks.load import ARROW_COMPAT, ChangedSinceChecked, redo_on_conflict, write_stage
from tasks.retrying import bookkeeping_task_options

REFUSED = "_bulkflow_refused"
"""Temporary table of the staged rows the re-check refuses: line, field, rule, message."""


@task(**bookkeeping_task_options("apply-job", "apply-{job.resource.name}"))
def apply_staged(settings: Settings, job: Job, slot: SlotClaim | None) -> None:
    """Write the job's staged rows to the table in one transaction (see the module docstring)."""
    staging = job.staging
    assert staging is not None, "only an all-or-nothing job has staged rows"
    with connect(settings) as conn:
        if job.dry_run:
            _predict_deletes(conn, job, staging)
        else:
            redo_on_conflict(conn, lambda recheck: _apply(conn, job, staging, slot, recheck=recheck), "the apply")


def _predict_deletes(conn: Connection, job: Job, staging: str) -> None:
    """A replace's dry run: count the rows the replace would delete (refusing as it would),
    record the counts on the dry run's job, and drop what it staged. Reads the tables only,
    takes no lock. Should it fail, the flow drops the stage (`set_aside`, `record_failure`)."""
    with conn.cursor() as cur:
        gone = _gone(cur, job, staging)
        deleted = {
            table.name: _count(cur, table_gone) for table, table_gone in _gone_with_dependents(cur, job.resource, gone)
        }
    conn.rollback()  # the sets of gone ids were temporary
    _record_deleted(conn, job, deleted)
    with conn.cursor() as cur:
        cur.execute(drop_staging_sql(staging))
    conn.commit()


def _count(cur: Cursor, gone: str) -> int:
    cur.execute(count_gone_sql(gone))
    return int(fetch_one(cur)[0])


def _record_deleted(conn: Connection, job: Job, deleted: dict[str, int]) -> None:
    """Write what a replace deleted (or would delete) on its job: its own rows, and the rows of other tables."""
    own = deleted.pop(job.resource.name)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE import_jobs SET deleted = $2, deleted_dependents = $3::jsonb WHERE job_key = $1",
            parameters=(job.key, own, json.dumps({t: n for t, n in deleted.items() if n})),
        )


def _apply(conn: Connection, job: Job, staging: str, slot: SlotClaim | None, *, recheck: bool) -> None:
    resource = job.resource
    with conn.cursor() as cur:
        tune_session(cur, whole_job=True)  # the staged rows are analysed below
        cur.execute(
            "SELECT applied_at IS NOT NULL FROM import_jobs WHERE job_key = $1 FOR UPDATE", parameters=(job.key,)
        )
        if fetch_one(cur)[0]:
            conn.rollback()  # an earlier run applied it: nothing left to do
            return
        cur.execute(lock_for_apply_sql(resource))
        cur.execute(analyze_sql(staging))
        if job.mode == "replace":  # its anti-join reads the whole table: plan it by the table's real size too
            cur.execute(analyze_sql(resource.name))
        if recheck:
            _refuse_staged(cur, job, staging)
        cur.execute(predict_sql(resource, staging, by_chunk=True))
        by_chunk = cur.fetchall()
        expected = Written(
            inserted=sum(int(row[1]) for row in by_chunk),
            updated=sum(int(row[2]) for row in by_chunk),
            unchanged=sum(int(row[3]) for row in by_chunk),
        )
        gone = _gone(cur, job, staging) if job.mode == "replace" else None
        written = write_stage(cur, resource, job.mode, staging)
        if written != expected:
            raise ChangedSinceChecked(f"the apply wrote {written}, where the staged rows said {expected}")
        if gone is not None:
            _record_deleted(conn, job, _delete_with_dependents(cur, resource, gone))
        for chunk, inserted, updated, unchanged in by_chunk:
            cur.execute(
                "UPDATE import_chunks SET inserted = $3, updated = $4, unchanged = $5 "
                "WHERE job_key = $1 AND chunk_index = $2",
                parameters=(job.key, chunk, inserted, updated, unchanged),
            )
        cur.execute("UPDATE import_jobs SET applied_at = now() WHERE job_key = $1", parameters=(job.key,))
        cur.execute(drop_staging_sql(staging))
        check_slot_held(cur, slot, "the apply")
    conn.commit()


def _gone(cur: Cursor, job: Job, staging: str) -> str:
    """The temporary set of the table's ids that are not in the file (a replace deletes
    them). Refuses, before anything is written, to delete rows other tables reference,
    unless the job cascades."""
    resource = job.resource
    gone = gone_set(resource)
    cur.execute(gone_table_sql(gone))
    cur.execute(collect_gone_sql(resource, staging, gone))
    if job.cascade:
        return gone
    for dependent, fk in dependents_of(resource):
        cur.execute(referenced_gone_sql(dependent, fk, gone))
        rows, referenced = fetch_one(cur)
        if referenced:
            raise ReplaceRefused(
                f"--mode replace would delete {referenced:,} {resource.name} that {rows:,} rows of "
                f"{dependent.name} reference ({fk.field}): nothing was applied; add --cascade to delete those rows too"
            )
    return gone


def gone_set(resource: Resource) -> str:
    return f"_bulkflow_gone_{resource.name}"


def _gone_with_dependents(cur: Cursor, resource: Resource, gone: str) -> list[tuple[Resource, str]]:
    """Each table and its set of gone ids, down the references from the rows listed in
    `gone`, in an order to delete them (a table's dependents before it; a table reached by
    two paths comes twice, with one set)."""
    order: list[tuple[Resource, str]] = []
    for dependent, fk in dependents_of(resource):
        dependent_gone = gone_set(dependent)
        cur.execute(gone_table_sql(dependent_gone))
        cur.execute(collect_dependents_sql(dependent, fk, gone, dependent_gone))
        order += _gone_with_dependents(cur, dependent, dependent_gone)
    return order + [(resource, gone)]


def _delete_with_dependents(cur: Cursor, resource: Resource, gone: str) -> dict[str, int]:
    """Delete the rows listed in `gone`, the rows referencing them first (and theirs, down
    the references); the rows deleted per table."""
    deleted: dict[str, int] = {}
    for table, table_gone in _gone_with_dependents(cur, resource, gone):
        cur.execute(delete_gone_sql(table, table_gone))
        deleted[table.name] = deleted.get(table.name, 0) + cur.rowcount
    return deleted


def _refuse_staged(cur: Cursor, job: Job, staging: str) -> None:
    """Check the staged rows again, under the apply's lock: the ones the table now refuses
    (a writer outside bulkflow took a key or removed a referenced row since they were
    checked) become rejects of their chunks and leave the stage."""
    resource = job.resource
    parts = []
    for fk in resource.foreign_keys:
        cur.execute(missing_reference_query(fk, staging))
        parts.append(_refusals(cur, fk.field, fk.rule, missing_message(fk)))
    nk = resource.natural_key
    query = taken_query(resource, staging, whole_file=True)
    if query is not None and nk is not None:
        cur.execute(query)
        parts.append(_refusals(cur, nk.field, *taken_refusal(resource, job.mode)))
    if job.mode in PRESENCE_MODES:
        parts.append(_mode_refusals(cur, job, staging))
    refused = pl.concat(parts)
    if refused.is_empty():
        return
    cur.adbc_ingest(REFUSED, refused.to_arrow(compat_level=ARROW_COMPAT), mode="replace", temporary=True)
    cur.execute(staged_rejects_sql(staging, REFUSED), parameters=(job.key,))
    cur.execute(count_staged_rejects_sql(staging, REFUSED), parameters=(job.key,))
    cur.execute(unstage_sql(staging, REFUSED))


def _mode_refusals(cur: Cursor, job: Job, staging: str) -> pl.DataFrame:
    """Staged rows in the table already (insert), or not in it (update)."""
    rule = presence_rule(job.mode)
    cur.execute(in_table_query(job.resource, staging, absent=rule == NOT_FOUND))
    return _refusals(cur, "id", rule, refusal_message(job.resource, rule, "id"))


def _refusals(cur: Cursor, field: str, rule: str, message: str) -> pl.DataFrame:
    return _entries(frame_of(cur.fetch_arrow_table()).get_column("line"), field, rule, message)


def _entries(lines: pl.Series, field: str, rule: str, message: str) -> pl.DataFrame:
    return pl.DataFrame({"line": lines.cast(pl.Int64)}).with_columns(
        pl.lit(field).alias("field"), pl.lit(rule).alias("rule"), pl.lit(message).alias("message")
    )
