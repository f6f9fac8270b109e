"""Loading one decided chunk: upsert, rejects and ledger in ONE transaction.

That single transaction is the exactly-once guarantee: the ledger row that marks chunk k of
a job done commits together with the chunk's rows and rejects, so a crash at any moment
leaves the chunk either fully applied and recorded or not at all, and a re-run skips
exactly the recorded chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import adbc_driver_manager
import polars as pl

from bulkflow.db import Connection, Cursor, connect, fetch_one, tune_session
from bulkflow.errors import RetryableError
from bulkflow.settings import Settings
from decisions.checks import frame_of, missing_message
from decisions.contracts import check_load
from decisions.decide import NOT_FOUND, CheckedChunk, presence_rule, refusal_message, taken_refusal
from decisions.sql import (
    STAGE,
    any_existing_sql,
    delete_stage_line_sql,
    in_table_query,
    insert_sql,
    missing_reference_query,
    predict_sql,
    stage_line_index_sql,
    taken_query,
    upsert_sql,
)
from schemas.columns import HOLDER, LINE, STAGED_CHUNK
from schemas.parameters import PRESENCE_MODES, WriteMode
from schemas.reports import COUNTS, ChunkResult, Written
from schemas.resource import Resource
from tasks.jobs import ChunkLedger
from tasks.limits import check_slot_held

CONFLICTS = ("23505", "23503")
"""unique_violation, foreign_key_violation: another transaction changed a key or a
referenced row since the chunk was checked."""
T = TypeVar("T")
ARROW_COMPAT = pl.CompatLevel.newest()
"""Hand polars' own string layout (string_view) to the driver as is, instead of converting
every string column to large_string first."""


def apply_chunk(settings: Settings, ledger: ChunkLedger, resource: Resource, chunk: CheckedChunk) -> ChunkResult:
    """Apply one chunk exactly once (see module docstring); returns its counts.

    The flow checked the rows against the database already, so the upsert normally just
    runs. Should a concurrent transaction have taken a key or removed a referenced row
    since, a constraint fires: the transaction is redone with the rows checked again inside
    it, the ones now refused becoming rejects. A conflict that persists (a transaction still
    in flight) is left to the step's retry, never guessed at. A chunk whose frames break
    their contract (`schemas/frames.py`) is refused before any SQL runs.
    """
    check_load(resource, chunk.rows, chunk.rejects)
    with connect(settings) as conn:
        return redo_on_conflict(
            conn, lambda recheck: _apply(conn, ledger, resource, chunk, recheck=recheck), f"chunk {chunk.index}"
        )


def redo_on_conflict(conn: Connection, attempt: Callable[[bool], T], what: str) -> T:
    """`attempt(False)`; should a constraint fire (another transaction changed a key or a
    referenced row since the rows were checked), roll back and `attempt(True)`, which checks
    the rows again inside its transaction. A conflict that persists (a transaction still in
    flight) is left to the step's retry, never guessed at."""
    try:
        return attempt(False)
    except (adbc_driver_manager.IntegrityError, ChangedSinceChecked) as exc:
        if not _is_conflict(exc):
            raise
        conn.rollback()
    try:
        return attempt(True)
    except (adbc_driver_manager.IntegrityError, ChangedSinceChecked) as exc:
        if not _is_conflict(exc):
            raise
        raise RetryableError(
            f"{what}: another transaction is changing the same keys; retrying", sqlstate=getattr(exc, "sqlstate", None)
        ) from exc


class ChangedSinceChecked(Exception):
    """The table changed under the chunk since it was checked in a way no constraint
    catches: `--mode update` found a row gone (the upsert inserted it)."""


def _is_conflict(exc: Exception) -> bool:
    return isinstance(exc, ChangedSinceChecked) or getattr(exc, "sqlstate", None) in CONFLICTS


def _apply(
    conn: Connection, ledger: ChunkLedger, resource: Resource, chunk: CheckedChunk, *, recheck: bool
) -> ChunkResult:
    job_key = ledger.job_key
    with conn.cursor() as cur:
        tune_session(cur)
        cur.execute(
            "INSERT INTO import_chunks (job_key, chunk_index, rows_read, flow_run_id) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            parameters=(job_key, chunk.index, chunk.rows_read, ledger.flow_run_id),
        )
        claimed = cur.fetchone() is not None
    if not claimed:
        conn.rollback()
        return _recorded_result(conn, job_key, chunk.index)
    if ledger.dry_run:
        written, refused = _predict_rows(conn, resource, chunk), chunk.rejects.clear()
        if ledger.staging:  # a replace's dry run: the kept rows, to count what it would delete
            _stage_rows(conn, resource, chunk, ledger.staging)
    elif ledger.staging:
        written, refused = _stage_rows(conn, resource, chunk, ledger.staging), chunk.rejects.clear()
    else:
        written, refused = _write_rows(conn, resource, chunk, ledger.mode, recheck=recheck)
    rejects = pl.concat([chunk.rejects, refused])
    rejected = rejects.select(pl.col("line").n_unique()).item() if rejects.height else 0
    _save_rejects(conn, job_key, chunk.index, rejects)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE import_chunks SET inserted = $3, updated = $4, unchanged = $5, rejected = $6 "
            "WHERE job_key = $1 AND chunk_index = $2",
            parameters=(job_key, chunk.index, written.inserted, written.updated, written.unchanged, rejected),
        )
        check_slot_held(cur, ledger.slot, f"chunk {chunk.index}")
    conn.commit()
    return ChunkResult(
        index=chunk.index, rows_read=chunk.rows_read, **written.model_dump(), rejected=rejected, skipped=False
    )


def _recorded_result(conn: Connection, job_key: str, index: int) -> ChunkResult:
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT {', '.join(COUNTS)} FROM import_chunks WHERE job_key = $1 AND chunk_index = $2",
            parameters=(job_key, index),
        )
        counts = fetch_one(cur)
    return ChunkResult(index=index, skipped=True, **dict(zip(COUNTS, counts)))


def _predict_rows(conn: Connection, resource: Resource, chunk: CheckedChunk) -> Written:
    """What writing the accepted rows would do to the table, read-only (a dry run)."""
    if chunk.rows.is_empty():
        return Written()
    with conn.cursor() as cur:
        ingest_temporary(cur, STAGE, chunk.rows)
        cur.execute(predict_sql(resource, STAGE))
        inserted, updated, unchanged = fetch_one(cur)
    return Written(inserted=int(inserted), updated=int(updated), unchanged=int(unchanged))


def _stage_rows(conn: Connection, resource: Resource, chunk: CheckedChunk, staging: str) -> Written:
    """Keep the accepted rows in the job's staging table (`tasks/apply.py` applies them)."""
    if chunk.rows.height:
        staged = chunk.rows.select(pl.lit(chunk.index, pl.Int32).alias(STAGED_CHUNK), LINE, *resource.field_names)
        with conn.cursor() as cur:
            cur.adbc_ingest(staging, staged.to_arrow(compat_level=ARROW_COMPAT), mode="append")
    return Written()


def _write_rows(
    conn: Connection, resource: Resource, chunk: CheckedChunk, mode: WriteMode, *, recheck: bool
) -> tuple[Written, pl.DataFrame]:
    """Stage the accepted rows and write them as `mode` says: what that wrote, and the
    rejects of rows refused by the re-check."""
    with conn.cursor() as cur:
        if chunk.all_new and not recheck and mode != "update":
            return append_new_rows(cur, resource, chunk.rows), chunk.rejects.clear()
        ingest_temporary(cur, STAGE, chunk.rows)
        refused = _refused_now(cur, resource, chunk, mode) if recheck else chunk.rejects.clear()
        return write_stage(cur, resource, mode, STAGE), refused


def append_new_rows(cur: Cursor, resource: Resource, rows: pl.DataFrame) -> Written:
    """Append accepted rows whose ids the table does not hold straight into it with binary
    COPY: one pass instead of a stage and `INSERT ... SELECT` (a sixth cheaper for the server)."""
    cur.adbc_ingest(resource.name, rows.select(resource.field_names).to_arrow(compat_level=ARROW_COMPAT), mode="append")
    return Written(inserted=rows.height)


def ingest_temporary(cur: Cursor, table: str, frame: pl.DataFrame) -> None:
    """`frame` as the session's temporary `table` (binary COPY), in place of an earlier one."""
    cur.adbc_ingest(table, frame.to_arrow(compat_level=ARROW_COMPAT), mode="replace", temporary=True)


def _refused_now(cur: Cursor, resource: Resource, chunk: CheckedChunk, mode: WriteMode) -> pl.DataFrame:
    """Check the staged rows again; drop the refused ones from the stage, return their rejects."""
    parts = [_mode_refusals(cur, resource, chunk, mode)] if mode in PRESENCE_MODES else []
    for fk in resource.foreign_keys:
        cur.execute(missing_reference_query(fk, STAGE))
        lines = frame_of(cur.fetch_arrow_table()).get_column("line")
        parts.append(chunk.rejects_for(resource, lines, field=fk.field, rule=fk.rule, message=missing_message(fk)))
    query = taken_query(resource, STAGE)
    if query is not None and resource.natural_key is not None:
        cur.execute(query)
        taken = frame_of(cur.fetch_arrow_table())
        if set(taken.get_column(HOLDER).to_list()) & chunk.released_holders:
            raise RetryableError(f"chunk {chunk.index}: waiting for an earlier chunk that frees a key it takes")
        nk = resource.natural_key
        rule, message = taken_refusal(resource, mode)
        parts.append(chunk.rejects_for(resource, taken.get_column("line"), field=nk.field, rule=rule, message=message))
    refused = pl.concat(parts) if parts else chunk.rejects.clear()
    if refused.height:
        cur.execute(stage_line_index_sql(STAGE))
        for line in refused.get_column("line").unique().to_list():
            cur.execute(delete_stage_line_sql(STAGE), parameters=(line,))
    return refused


def _mode_refusals(cur: Cursor, resource: Resource, chunk: CheckedChunk, mode: WriteMode) -> pl.DataFrame:
    """The staged rows the write mode refuses now: in the table already (insert), or not
    (update)."""
    rule = presence_rule(mode)
    cur.execute(in_table_query(resource, STAGE, absent=rule == NOT_FOUND))
    lines = frame_of(cur.fetch_arrow_table()).get_column("line")
    return chunk.rejects_for(resource, lines, field="id", rule=rule, message=refusal_message(resource, rule, "id"))


def write_stage(cur: Cursor, resource: Resource, mode: WriteMode, stage: str) -> Written:
    """Write the rows of `stage` (a chunk's, or an all-or-nothing job's) as `mode` says.

    A chunk of ids the table does not hold yet (the common case of a fresh load, and every
    chunk of an insert) goes in with a plain INSERT, a third cheaper than the upsert's
    speculative insertion. Should another transaction add one of those ids meanwhile, the
    INSERT fails on the primary key and the caller treats it as any other conflict; so does
    an update that finds a row gone (its upsert inserted it).
    """
    if mode not in PRESENCE_MODES:
        cur.execute(any_existing_sql(resource, stage))
        plain_insert = not fetch_one(cur)[0]
    else:
        plain_insert = mode == "insert"
    if plain_insert:
        cur.execute(insert_sql(resource, stage))
        return Written(inserted=cur.rowcount)
    cur.execute(upsert_sql(resource, stage))
    inserted, updated, unchanged = fetch_one(cur)
    if mode == "update" and inserted:
        raise ChangedSinceChecked(f"{inserted} row(s) of the chunk are no longer in {resource.name}")
    return Written(inserted=int(inserted), updated=int(updated), unchanged=int(unchanged))


def _save_rejects(conn: Connection, job_key: str, index: int, rejects: pl.DataFrame) -> None:
    if rejects.height == 0:
        return
    table = rejects.select(
        pl.lit(job_key).alias("job_key"), pl.lit(index, pl.Int32).alias("chunk_index"), pl.all()
    ).to_arrow(compat_level=ARROW_COMPAT)
    with conn.cursor() as cur:
        cur.adbc_ingest("import_rejects", table, mode="append")
