"""The database checks of a chunk, before the in-file key decision.

The flow decides, chunk by chunk in file order, which rows are accepted; to decide as the
database would, it first asks the database, for the rows that pass the record rules:
which references are missing, how the unique index folds each natural key, which id an
id-less row resolves to, and which other id already holds a natural key. The check only
reads (its temp table goes with the rolled-back transaction), so any number can run while
earlier chunks load.

Every statement has one possible plan whatever the statistics say (see `tasks/sql.py`).
"""

from __future__ import annotations

import polars as pl
from prefect import task

from bulkflow.db import connect, fetch_one, tune_session
from bulkflow.settings import Settings
from schemas.resource import ForeignKey, Resource
from tasks.retrying import chunk_task_options
from tasks.sql import (
    CHECK_STAGE,
    any_id_exists_query,
    key_facts_query,
    missing_reference_query,
    recorded_rejects_query,
)
from tasks.validate import KEY, LINE, DatabaseFacts, RecordCheck, no_facts


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
