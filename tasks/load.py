"""Loading one checked chunk: database checks, upsert, rejects and ledger in ONE transaction.

That single transaction is the exactly-once guarantee: the ledger row that marks chunk k of
a job done commits together with the chunk's rows and rejects, so a crash at any moment
leaves the chunk either fully applied and recorded or not at all, and a re-run skips
exactly the recorded chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import adbc_driver_manager
import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from bulkflow.db import Connection, connect
from bulkflow.errors import RetryableError, retry_condition
from schemas.resource import Resource
from tasks.validate import LINE, CheckedChunk

STAGE = "_bulkflow_stage"
SESSION_SETTINGS = (
    # Safe for exactly-once: the ledger row commits with the chunk, so a commit lost in a
    # crash is a chunk redone, never a chunk half-applied or counted twice.
    "SET LOCAL synchronous_commit = off",
    # The stage is one chunk and the targets are indexed on every joined key, so the only
    # good plan is: scan the stage, probe the target's index per staged row. Statistics
    # cannot be trusted to find it (the stage is a fresh temp table; a target truncated or
    # filled by this very import looks empty), and a wrong plan is quadratic.
    "SET LOCAL enable_hashjoin = off",
    "SET LOCAL enable_mergejoin = off",
    "SET LOCAL enable_seqscan = off",
)
VIOLATIONS = "_bulkflow_violations"
UNIQUE_VIOLATION = "23505"
ARROW_COMPAT = pl.CompatLevel.newest()
"""Hand polars' own string layout (string_view) to the driver as is, instead of converting
every string column to large_string first."""


@dataclass(frozen=True)
class ChunkResult:
    index: int
    rows_read: int
    inserted: int
    updated: int
    rejected: int
    skipped: bool
    """True when the ledger already held this chunk (an earlier run committed it)."""


@task(
    name="load-chunk",
    task_run_name="load-{resource.name}-chunk-{chunk.index}",
    retries=3,
    retry_delay_seconds=[1, 5, 15],
    retry_condition_fn=retry_condition,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def load_chunk(job_key: str, resource: Resource, chunk: CheckedChunk) -> ChunkResult:
    """Apply one chunk exactly once (see module docstring); returns its counts."""
    with connect() as conn:
        with conn.cursor() as cur:
            for setting in SESSION_SETTINGS:
                cur.execute(setting)
            cur.execute(
                "INSERT INTO import_chunks (job_key, chunk_index, rows_read) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING RETURNING 1",
                parameters=(job_key, chunk.index, chunk.rows_read),
            )
            claimed = cur.fetchone() is not None
        if not claimed:
            conn.rollback()
            return _recorded_result(conn, job_key, chunk.index)
        db_rejects = _stage_and_check(conn, resource, chunk)
        rejects = pl.concat([chunk.rejects, db_rejects])
        inserted, updated = _upsert(conn, resource)
        rejected = rejects.select(pl.col("line").n_unique()).item() if rejects.height else 0
        _save_rejects(conn, job_key, chunk.index, rejects)
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE import_chunks SET inserted = $3, updated = $4, rejected = $5 "
                "WHERE job_key = $1 AND chunk_index = $2",
                parameters=(job_key, chunk.index, inserted, updated, rejected),
            )
        conn.commit()
    return ChunkResult(chunk.index, chunk.rows_read, inserted, updated, rejected, skipped=False)


def _recorded_result(conn: Connection, job_key: str, index: int) -> ChunkResult:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT rows_read, inserted, updated, rejected FROM import_chunks "
            "WHERE job_key = $1 AND chunk_index = $2",
            parameters=(job_key, index),
        )
        rows_read, inserted, updated, rejected = cur.fetchone()
    return ChunkResult(index, rows_read, inserted, updated, rejected, skipped=True)


def _stage_and_check(conn: Connection, resource: Resource, chunk: CheckedChunk) -> pl.DataFrame:
    """Ingest the chunk's rows into a temp table, run the set-based database checks, drop
    the violating rows from the stage and return their reject entries."""
    resource.pandera_schema().validate(chunk.rows.lazy())
    with conn.cursor() as cur:
        cur.adbc_ingest(STAGE, chunk.rows.to_arrow(compat_level=ARROW_COMPAT), mode="replace", temporary=True)
        cur.execute(f"DROP TABLE IF EXISTS {VIOLATIONS}")
        cur.execute(
            f"CREATE TEMP TABLE {VIOLATIONS} (line bigint, field text, rule text, message text)"
        )
        for statement in violation_queries(resource):
            cur.execute(f"INSERT INTO {VIOLATIONS} {statement}")
        cur.execute(f"DELETE FROM {STAGE} s USING {VIOLATIONS} v WHERE s.{LINE} = v.line")
        for statement in id_resolution(resource):
            cur.execute(statement)
        cur.execute(f"SELECT line, field, rule, message FROM {VIOLATIONS}")
        violations = pl.from_arrow(cur.fetch_arrow_table())
    return _violation_rejects(resource, chunk, violations)


def violation_queries(resource: Resource) -> list[str]:
    """SELECTs of (line, field, rule, message) for rows the database refuses."""
    queries = []
    nk = resource.natural_key
    if nk is not None:
        key = nk.sql.replace(nk.field, f"s.{nk.field}")
        target = nk.sql.replace(nk.field, f"t.{nk.field}")
        queries.append(
            f"SELECT s.{LINE}, '{nk.field}', '{nk.taken_rule}', "
            f"'{nk.field} is already used by another {resource.name[:-1]} (id ' || t.id || ')' "
            f"FROM {STAGE} s JOIN {resource.name} t ON {target} = {key} "
            f"WHERE s.id IS NOT NULL AND t.id <> s.id"
        )
    for fk in resource.foreign_keys:
        queries.append(
            f"SELECT s.{LINE}, '{fk.field}', '{fk.rule}', "
            f"'{fk.field} does not match any {fk.references[:-1]} id' "
            f"FROM {STAGE} s WHERE NOT EXISTS "
            f"(SELECT 1 FROM {fk.references} r WHERE r.id = s.{fk.field})"
        )
    return queries


def id_resolution(resource: Resource) -> list[str]:
    """Give id-less rows the id already held by their natural key, else a deterministic one
    derived from it (so re-importing the same record yields the same id)."""
    nk = resource.natural_key
    if nk is None:
        return []
    key = nk.sql.replace(nk.field, f"s.{nk.field}")
    target = nk.sql.replace(nk.field, f"t.{nk.field}")
    return [
        f"UPDATE {STAGE} s SET id = t.id FROM {resource.name} t WHERE s.id IS NULL AND {target} = {key}",
        f"UPDATE {STAGE} s SET id = md5('{resource.name}:' || {key})::uuid::text WHERE s.id IS NULL",
    ]


def _violation_rejects(resource: Resource, chunk: CheckedChunk, violations: pl.DataFrame) -> pl.DataFrame:
    if violations.height == 0:
        return chunk.rejects.clear()
    groups = violations.group_by(["field", "rule", "message"], maintain_order=True)
    return pl.concat(
        [
            chunk.rejects_for(resource, group["line"], field=field, rule=rule, message=message)
            for (field, rule, message), group in groups
        ]
    )


def upsert_sql(resource: Resource) -> str:
    columns = ", ".join(resource.field_names)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in resource.field_names if c != "id")
    return (
        f"WITH up AS (INSERT INTO {resource.name} ({columns}) SELECT {columns} FROM {STAGE} "
        f"ON CONFLICT (id) DO UPDATE SET {updates} RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up"
    )


def _upsert(conn: Connection, resource: Resource) -> tuple[int, int]:
    """Write the staged rows: (inserted, updated).

    A chunk of ids the table does not hold yet (the common case of a fresh load) goes in
    with a plain INSERT, a third cheaper than the upsert's speculative insertion. Should
    another transaction add one of those ids meanwhile, the INSERT fails on the primary key,
    the whole chunk rolls back, and the task's retry finds the id and upserts.
    """
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT EXISTS (SELECT 1 FROM {STAGE} s WHERE EXISTS "
            f"(SELECT 1 FROM {resource.name} t WHERE t.id = s.id))"
        )
        if not cur.fetchone()[0]:
            columns = ", ".join(resource.field_names)
            try:
                cur.execute(f"INSERT INTO {resource.name} ({columns}) SELECT {columns} FROM {STAGE}")
            except adbc_driver_manager.IntegrityError as exc:
                if getattr(exc, "sqlstate", None) == UNIQUE_VIOLATION:
                    raise RetryableError(f"another transaction inserted keys of this chunk meanwhile: {exc}") from exc
                raise
            return cur.rowcount, 0
        cur.execute(upsert_sql(resource))
        inserted, updated = cur.fetchone()
    return int(inserted), int(updated)


def _save_rejects(conn: Connection, job_key: str, index: int, rejects: pl.DataFrame) -> None:
    if rejects.height == 0:
        return
    table = rejects.select(
        pl.lit(job_key).alias("job_key"), pl.lit(index, pl.Int32).alias("chunk_index"), pl.all()
    ).to_arrow(compat_level=ARROW_COMPAT)
    with conn.cursor() as cur:
        cur.adbc_ingest("import_rejects", table, mode="append")
