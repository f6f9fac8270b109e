"""The end of an all-or-nothing job (`--atomic`): its staged rows reach the table in ONE
transaction, or not at all.

Invariants: the chunks were staged exactly once each (the staged rows, the rejects and
the ledger row of a chunk commit together, `load.py`); the apply writes every staged row,
sets the ledger's counts, marks the job applied and drops the staging table in a single
transaction. A crash before its commit leaves the table as before the import and the
staging table whole, so a re-run skips every staged chunk and applies once; after it, a
re-run finds the job applied and writes nothing.

That transaction begins as the chunks are staged (`ApplyAsStaged`): on a session of its
own it writes each chunk to the table once the chunk is staged, in file order, so the
table's writes overlap the reading and checking of the chunks after it instead of all
waiting for the end. It writes the accepted rows the flow holds (a first load's with a
binary COPY), or reads the chunk back from the staging table when they were decided on
Dask workers; at most `BACKLOG` chunks wait for it, so a slow apply slows the reading
instead of gathering the file in memory. Nothing of it is visible before its commit.
Should it meet anything it cannot write as checked (another writer took a key meanwhile,
a chunk another run staged, a lost session), it is rolled back and the apply runs from the
staging table at the end (`apply_staged`): the table is then locked against other writers
for the apply (readers go on), the staged rows checked again under the lock, so what it
counts is what it writes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Protocol

import polars as pl
from prefect import task
from prefect.logging import get_run_logger

from bulkflow.db import Connection, Cursor, connect, fetch_one, tune_session
from bulkflow.errors import ReplaceRefused, first_line
from bulkflow.settings import Settings
from decisions.checks import frame_of, missing_message
from decisions.decide import NOT_FOUND, presence_rule, refusal_message, taken_refusal
from decisions.sql import (
    STAGE,
    analyze_sql,
    collect_dependents_sql,
    collect_gone_sql,
    count_gone_sql,
    count_staged_rejects_sql,
    delete_gone_sql,
    drop_staging_sql,
    gone_table_sql,
    in_table_query,
    insert_sql,
    lock_for_apply_sql,
    missing_reference_query,
    predict_sql,
    referenced_gone_sql,
    staged_chunk_sql,
    staged_rejects_sql,
    taken_query,
    unstage_sql,
)
from schemas import dependents_of
from schemas.parameters import PRESENCE_MODES
from schemas.reports import ChunkResult, Written
from schemas.resource import Resource
from tasks.jobs import Job
from tasks.limits import SlotClaim, check_slot_held
from tasks.load import ChangedSinceChecked, append_new_rows, ingest_temporary, redo_on_conflict, write_stage
from tasks.retrying import bookkeeping_task_options

BACKLOG = 3
"""Chunks at most waiting for the apply's write (each holds its accepted rows)."""
REFUSED = "_bulkflow_refused"
"""Temporary table of the staged rows the re-check refuses: line, field, rule, message."""


@task(**bookkeeping_task_options("apply-job", "apply-{job.resource.name}"))
def apply_staged(settings: Settings, job: Job, slot: SlotClaim | None, begun: ApplyAsStaged | None = None) -> None:
    """Write the job's staged rows to the table in one transaction (see the module docstring):
    commit the apply `begun` as the chunks were staged, or, when there is none or it was
    given up, apply the staging table's rows now."""
    staging = job.staging
    assert staging is not None, "only an all-or-nothing job has staged rows"
    if begun is not None and begun.commit():
        return
    with connect(settings) as conn:
        if job.dry_run:
            _predict_deletes(conn, job, staging)
        else:
            redo_on_conflict(conn, lambda recheck: _apply(conn, job, staging, slot, recheck=recheck), "the apply")


class Load(Protocol):
    """A chunk's load under way (a task run's future, or its outcome in the flow)."""

    def result(self) -> ChunkResult: ...


class ApplyAsStaged:
    """An all-or-nothing job's apply, begun as its chunks are staged (see the module
    docstring): one transaction on a session of its own, worked on by a thread of its own.
    It `follow`s each chunk's load in file order, writing the chunk once it is staged;
    `commit` ends the apply; `close` rolls back whatever was not committed."""

    def __init__(self, settings: Settings, job: Job, slot: SlotClaim | None) -> None:
        assert job.staging is not None, "only an all-or-nothing job has staged rows"
        self.settings, self.job, self.slot, self.staging = settings, job, slot, job.staging
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulkflow-apply")
        self._session = ExitStack()
        self._conn: Connection | None = None
        self._written: dict[int, Written] = {}
        self._backlog = threading.BoundedSemaphore(BACKLOG)
        self._closing = False
        self.given_up: str | None = None
        """Why the apply is left to the staging table at the end, once it is."""

    def follow(self, load: Load, rows: pl.DataFrame | None) -> None:
        """Write the chunk `load` stages to the table once it is staged, after every chunk
        followed before (the loads are followed in file order): its accepted `rows` when the
        flow holds them, else the chunk's rows read back from the staging table. Waits while
        `BACKLOG` chunks wait for their write, so that the rows held for it stay few."""
        self._backlog.acquire()
        self._worker.submit(self._write, load, rows)

    def commit(self) -> bool:
        """End the apply in its transaction once every staged chunk is written: True once the
        job is applied, False when the apply is to run from the staging table instead."""
        applied = self._worker.submit(self._commit).result()
        if self.given_up is None:
            get_run_logger().info("applied in one transaction, each chunk written as it was staged")
        else:
            outcome = "nothing left to apply" if applied else "applying the staged rows at the end"
            get_run_logger().info("%s: %s", outcome, self.given_up)
        return applied

    def close(self) -> None:
        """Roll back what was not committed (a failed run, a given-up apply), end the thread."""
        self._closing = True  # the chunks still waiting are not written
        self._worker.submit(self._session.close).result()
        self._worker.shutdown()

    def _write(self, load: Load, rows: pl.DataFrame | None) -> None:
        try:
            self._write_staged(load, rows)
        finally:
            self._backlog.release()

    def _write_staged(self, load: Load, rows: pl.DataFrame | None) -> None:
        if self.given_up is not None or self._closing:
            return
        try:
            result = load.result()
        except Exception:  # noqa: BLE001 - the flow fails on it; nothing is left to write
            self._give_up("a chunk failed")
            return
        if result.skipped:
            self._give_up(f"chunk {result.index} was staged by another run")
            return
        try:
            with self._connection().cursor() as cur:
                self._written[result.index] = self._write_chunk(cur, result.index, rows)
        except Exception as failure:  # noqa: BLE001 - the apply at the end meets it again, or not
            self._give_up(f"chunk {result.index}: {first_line(failure)}")

    def _write_chunk(self, cur: Cursor, chunk: int, rows: pl.DataFrame | None) -> Written:
        """Write the chunk's accepted `rows`, or its staged ones when the flow does not hold them."""
        job = self.job
        resource = job.resource
        if job.first_load and job.mode != "update":
            # straight in: the table held no rows and the file's accepted ids are unique
            if rows is None:
                cur.execute(insert_sql(resource, self.staging, chunk=chunk))
                return Written(inserted=cur.rowcount)
            return append_new_rows(cur, resource, rows)
        if rows is None:
            for statement in staged_chunk_sql(resource, self.staging, chunk):
                cur.execute(statement)
        else:
            ingest_temporary(cur, STAGE, rows)
        return write_stage(cur, resource, job.mode, STAGE)

    def _commit(self) -> bool:
        if self.given_up is not None:
            return False
        job = self.job
        try:
            conn = self._connection()
            with conn.cursor() as cur:
                if _applied_already(cur, job):
                    self._give_up("another run applied the job")
                    return True
                gone = None
                if job.mode == "replace":
                    tune_session(cur, whole_job=True)  # its anti-join reads the whole table
                    cur.execute(analyze_sql(self.staging))
                    cur.execute(analyze_sql(job.resource.name))
                    gone = _gone(cur, job, self.staging)
                _complete(cur, job, self.staging, self.slot, self._written, gone)
            conn.commit()
        except Exception as failure:  # noqa: BLE001 - the apply at the end meets it again, or not
            self._give_up(first_line(failure))
            return False
        return True

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._session.enter_context(connect(self.settings))
            with self._conn.cursor() as cur:
                tune_session(cur)
        return self._conn

    def _give_up(self, why: str) -> None:
        self.given_up = why
        self._conn = None
        self._session.close()  # rolls back; the session goes back to the pool


@contextmanager
def apply_as_staged(
    settings: Settings, job: Job, slot: SlotClaim | None, *, small_file: bool, may_pause: bool
) -> Iterator[ApplyAsStaged | None]:
    """An `ApplyAsStaged` for an all-or-nothing job that writes, has more than one chunk
    (not a `small_file`), has none staged by an earlier run (a resumed job is applied from
    its staging table), and `may_pause` not for an operator (it would hold its transaction
    open for up to an hour); None for any other. Rolled back on the way out unless
    committed."""
    if job.staging is None or job.dry_run or job.applied or job.done_chunks or small_file or may_pause:
        yield None
        return
    applying = ApplyAsStaged(settings, job, slot)
    try:
        yield applying
    finally:
        applying.close()


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
    with conn.cursor() as cur:
        _record_deleted(cur, job, deleted)
        cur.execute(drop_staging_sql(staging))
    conn.commit()


def _count(cur: Cursor, gone: str) -> int:
    cur.execute(count_gone_sql(gone))
    return int(fetch_one(cur)[0])


def _record_deleted(cur: Cursor, job: Job, deleted: dict[str, int]) -> None:
    """Write what a replace deleted (or would delete) on its job: its own rows, and the rows of other tables."""
    own = deleted.pop(job.resource.name)
    cur.execute(
        "UPDATE import_jobs SET deleted = $2, deleted_dependents = $3::jsonb WHERE job_key = $1",
        parameters=(job.key, own, json.dumps({t: n for t, n in deleted.items() if n})),
    )


def _apply(conn: Connection, job: Job, staging: str, slot: SlotClaim | None, *, recheck: bool) -> None:
    resource = job.resource
    with conn.cursor() as cur:
        tune_session(cur, whole_job=True)  # the staged rows are analysed below
        if _applied_already(cur, job):
            conn.rollback()  # an earlier run applied it: nothing left to do
            return
        cur.execute(lock_for_apply_sql(resource))
        cur.execute(analyze_sql(staging))
        if recheck:
            _refuse_staged(cur, job, staging)
        cur.execute(predict_sql(resource, staging, by_chunk=True))
        by_chunk = {int(c): Written(inserted=int(i), updated=int(u), unchanged=int(n)) for c, i, u, n in cur.fetchall()}
        expected = sum(by_chunk.values(), Written())
        gone = _gone(cur, job, staging) if job.mode == "replace" else None
        written = write_stage(cur, resource, job.mode, staging)
        if written != expected:
            raise ChangedSinceChecked(f"the apply wrote {written}, where the staged rows said {expected}")
        _complete(cur, job, staging, slot, by_chunk, gone)
    conn.commit()


def _applied_already(cur: Cursor, job: Job) -> bool:
    """Whether an earlier run applied the job; holds its ledger row until the transaction ends."""
    cur.execute("SELECT applied_at IS NOT NULL FROM import_jobs WHERE job_key = $1 FOR UPDATE", parameters=(job.key,))
    return bool(fetch_one(cur)[0])


def _complete(
    cur: Cursor, job: Job, staging: str, slot: SlotClaim | None, by_chunk: dict[int, Written], gone: str | None
) -> None:
    """What ends an apply whose staged rows are written: a replace's deletes (the ids in
    `gone`), each chunk's counts in the ledger, the job marked applied, its staging dropped,
    and the write slot still held. The caller commits."""
    if gone is not None:
        _record_deleted(cur, job, _delete_with_dependents(cur, job.resource, gone))
    for chunk, written in by_chunk.items():
        cur.execute(
            "UPDATE import_chunks SET inserted = $3, updated = $4, unchanged = $5 "
            "WHERE job_key = $1 AND chunk_index = $2",
            parameters=(job.key, chunk, written.inserted, written.updated, written.unchanged),
        )
    cur.execute("UPDATE import_jobs SET applied_at = now() WHERE job_key = $1", parameters=(job.key,))
    cur.execute(drop_staging_sql(staging))
    check_slot_held(cur, slot, "the apply")


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
    ingest_temporary(cur, REFUSED, refused)
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
