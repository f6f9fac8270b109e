"""The database checks of a chunk, before the in-file key decision.

The flow decides, chunk by chunk in file order, which rows are accepted; to decide as the
database would, it first asks the database, for the rows that pass the record rules:
which references are missing, how the unique index folds each natural key, which id an
id-less row resolves to, and which other id already holds a natural key. The check only
reads (its temp table goes with the rolled-back transaction), so any number can run while
earlier chunks load.

Every statement here has one possible plan whatever the statistics say: the stage is the
outer side of a LATERAL subquery with LIMIT 1, which PostgreSQL cannot flatten, so each
staged row probes the target's index once. The SQL is built by pure functions.
"""

from __future__ import annotations

import polars as pl
from prefect import task

from bulkflow.db import connect, fetch_one, tune_session
from bulkflow.settings import Settings
from schemas.resource import ForeignKey, Resource
from tasks.retrying import chunk_task_options
from tasks.validate import HOLDER, KEY, LINE, RESOLVED_ID, DatabaseFacts, RecordCheck, no_facts

CHECK_STAGE = "_bulkflow_check"


def quote(name: str) -> str:
    """A SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def missing_reference_query(fk: ForeignKey, stage: str = CHECK_STAGE) -> str:
    """Lines of staged rows whose `fk.field` matches no row of the referenced table."""
    column = quote(fk.field)
    return (
        f"SELECT s.{quote(LINE)} AS line FROM {quote(stage)} s "
        f"LEFT JOIN LATERAL (SELECT 1 AS found FROM {quote(fk.references)} r "
        f"WHERE r.{quote('id')} = s.{column} LIMIT 1) r ON true "
        f"WHERE s.{column} IS NOT NULL AND r.found IS NULL"
    )


def key_facts_query(resource: Resource, stage: str = CHECK_STAGE) -> str | None:
    """For each staged row where it matters: the natural key as the unique index folds it
    (when that differs from the staged `_key`), the id an id-less row resolves to (the
    holder of its key, else an id derived from the key), and the other id holding the key.
    None when the resource has no natural key."""
    nk = resource.natural_key
    if nk is None:
        return None
    staged_key = nk.sql(f"s.{quote(nk.field)}")
    held_key = nk.sql(f"t.{quote(nk.field)}")
    given_id, holder = f"s.{quote('id')}", f"h.{quote('id')}"
    derived_id = f"md5('{resource.name}:' || {staged_key})::uuid::text"
    return (
        f"SELECT s.{quote(LINE)}, "
        f"CASE WHEN {staged_key} IS DISTINCT FROM s.{quote(KEY)} THEN {staged_key} END AS {quote(KEY)}, "
        f"CASE WHEN {given_id} IS NULL THEN coalesce({holder}, {derived_id}) END AS {quote(RESOLVED_ID)}, "
        f"CASE WHEN {given_id} <> {holder} THEN {holder} END AS {quote(HOLDER)} "
        f"FROM {quote(stage)} s "
        f"LEFT JOIN LATERAL (SELECT t.{quote('id')} FROM {quote(resource.name)} t "
        f"WHERE {held_key} = {staged_key} LIMIT 1) h ON true "
        f"WHERE {given_id} IS NULL OR {given_id} <> {holder} OR {staged_key} IS DISTINCT FROM s.{quote(KEY)}"
    )


def taken_query(resource: Resource, stage: str) -> str | None:
    """(line, holder) of staged rows whose natural key another id holds in the table."""
    nk = resource.natural_key
    if nk is None:
        return None
    staged_key, held_key = nk.sql(f"s.{quote(nk.field)}"), nk.sql(f"t.{quote(nk.field)}")
    return (
        f"SELECT s.{quote(LINE)} AS line, h.{quote('id')} AS {quote(HOLDER)} FROM {quote(stage)} s "
        f"JOIN LATERAL (SELECT t.{quote('id')} FROM {quote(resource.name)} t "
        f"WHERE {held_key} = {staged_key} AND t.{quote('id')} <> s.{quote('id')} LIMIT 1) h ON true"
    )


def any_id_exists_query(resource: Resource, stage: str = CHECK_STAGE) -> str:
    """Whether any staged id is in the table already (stops at the first one)."""
    return (
        f"SELECT EXISTS (SELECT 1 FROM {quote(stage)} s JOIN LATERAL (SELECT 1 FROM {quote(resource.name)} t "
        f"WHERE t.{quote('id')} = s.{quote('id')} LIMIT 1) t ON true WHERE s.{quote('id')} IS NOT NULL)"
    )


def recorded_rejects_query() -> str:
    return "SELECT DISTINCT line FROM import_rejects WHERE job_key = $1 AND chunk_index = $2"


def missing_message(fk: ForeignKey) -> str:
    return f"{fk.field} does not match any {fk.references[:-1]} id"


@task(**chunk_task_options("check-chunk", "check-{resource.name}-chunk-{check.index}"))
def check_database(settings: Settings, job_key: str, resource: Resource, check: RecordCheck, committed: bool) -> DatabaseFacts:
    """The database's facts about the chunk's candidate rows (see `database_facts`)."""
    return database_facts(settings, job_key, resource, check, committed)


def database_facts(settings: Settings, job_key: str, resource: Resource, check: RecordCheck, committed: bool) -> DatabaseFacts:
    """The database's facts about the chunk's candidate rows (read-only). For a chunk an
    earlier run committed, also the lines it rejected then."""
    candidates = check.candidates(resource)
    facts = no_facts()
    if candidates.height == 0:
        return facts  # nothing to look up, and nothing the chunk could have accepted
    columns = [LINE, *dict.fromkeys(resource.key_fields), KEY]
    with connect(settings) as conn, conn.cursor() as cur:
        tune_session(cur)
        cur.adbc_ingest(CHECK_STAGE, candidates.select(columns).to_arrow(), mode="replace", temporary=True)
        missing = []
        for fk in resource.foreign_keys:
            cur.execute(missing_reference_query(fk))
            lines = pl.from_arrow(cur.fetch_arrow_table())
            assert isinstance(lines, pl.DataFrame)
            missing.append(lines.select(
                pl.col("line").cast(pl.Int64), pl.lit(fk.field).alias("field"), pl.lit(fk.rule).alias("rule"),
                pl.lit(missing_message(fk)).alias("message"),
            ))
        keys = facts.keys
        query = key_facts_query(resource)
        if query is not None:
            cur.execute(query)
            keys = frame_of(cur.fetch_arrow_table()).cast(facts.keys.schema)
        cur.execute(any_id_exists_query(resource))
        ids_exist = bool(fetch_one(cur)[0])
        recorded = None
        if committed:
            cur.execute(recorded_rejects_query(), parameters=(job_key, check.index))
            recorded = frame_of(cur.fetch_arrow_table()).get_column("line").cast(pl.Int64)
        conn.rollback()
    references = pl.concat([facts.missing_references, *missing]) if missing else facts.missing_references
    return DatabaseFacts(missing_references=references, keys=keys, recorded_rejects=recorded, ids_exist=ids_exist)


def frame_of(table: object) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
