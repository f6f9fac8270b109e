"""The database checks of a chunk, before the in-file key decision.

The flow decides, chunk by chunk in file order, which rows are accepted; to decide as the
database would, it first asks the database, for the rows that pass the record rules:
which references are missing, how the unique index folds each natural key, which id an
id-less row resolves to, and which other id already holds a natural key. The check only
reads (its temp table goes with the rolled-back transaction), so any number can run while
earlier chunks load.

Every statement has one possible plan whatever the statistics say (see `decisions/sql.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from bulkflow.db import Cursor, connect, fetch_one, tune_session
from bulkflow.settings import Settings
from decisions.decide import DatabaseFacts, no_facts
from decisions.rules import RecordCheck
from decisions.sql import (
    CHECK_STAGE,
    any_id_exists_query,
    in_table_query,
    key_facts_query,
    missing_reference_query,
    recorded_rejects_query,
)
from schemas.columns import KEY, LINE
from schemas.parameters import PRESENCE_MODES, WriteMode
from schemas.resource import ForeignKey, Resource


def missing_message(fk: ForeignKey) -> str:
    return f"{fk.field} does not match any {fk.references[:-1]} id"


@dataclass(frozen=True)
class CheckScope:
    """What the checks of a job's chunks need to know of the job."""

    job_key: str
    first_load: bool = False
    """See `tasks.jobs.Job.first_load`."""
    mode: WriteMode = "upsert"
    """insert and update need to know which rows the table holds already."""


def database_facts(
    settings: Settings, scope: CheckScope, resource: Resource, check: RecordCheck, committed: bool
) -> DatabaseFacts:
    """The database's facts about the chunk's candidate rows (read-only). For a chunk an
    earlier run committed, also the lines it rejected then.

    In a first load (`Job.first_load`) the table holds only rows this file accepted earlier,
    which the in-file decision knows already: a chunk whose candidates all carry an id and
    a plain ASCII key then needs only its references checked. Should a writer outside
    bulkflow add a row meanwhile, the table's constraints refuse the load and the chunk is
    redone with every check (`load.py`).
    """
    candidates = check.candidates(resource)
    facts = no_facts()
    if candidates.height == 0:
        return facts  # nothing to look up, and nothing the chunk could have accepted
    key_checks = committed or not (scope.first_load and _keys_need_no_lookup(resource, candidates))
    if not key_checks and not resource.foreign_keys:
        return facts
    fields = resource.key_fields if key_checks else tuple(fk.field for fk in resource.foreign_keys)
    with connect(settings) as conn, conn.cursor() as cur:
        tune_session(cur)
        staged = candidates.select(LINE, *dict.fromkeys(fields), *([KEY] if key_checks else []))
        cur.adbc_ingest(CHECK_STAGE, staged.to_arrow(), mode="replace", temporary=True)
        missing = [_missing_references(cur, fk) for fk in resource.foreign_keys]
        keys, ids_exist, recorded, in_table = facts.keys, False, None, facts.in_table
        query = key_facts_query(resource)
        if key_checks and query is not None:
            cur.execute(query)
            keys = frame_of(cur.fetch_arrow_table()).cast(facts.keys.schema)
        if key_checks:
            cur.execute(any_id_exists_query(resource))
            ids_exist = bool(fetch_one(cur)[0])
        if key_checks and scope.mode in PRESENCE_MODES:
            cur.execute(in_table_query(resource))
            in_table = _lines(cur)
        if committed:
            cur.execute(recorded_rejects_query(), parameters=(scope.job_key, check.index))
            recorded = _lines(cur)
        conn.rollback()
    references = pl.concat([facts.missing_references, *missing]) if missing else facts.missing_references
    return DatabaseFacts(
        missing_references=references, keys=keys, recorded_rejects=recorded, ids_exist=ids_exist, in_table=in_table
    )


def _lines(cur: Cursor) -> pl.Series:
    return frame_of(cur.fetch_arrow_table()).get_column("line").cast(pl.Int64)


def _keys_need_no_lookup(resource: Resource, candidates: pl.DataFrame) -> bool:
    """Every candidate carries its id, and its natural key is ASCII (folded alike here and
    by the database): no id to resolve, no folding to ask for."""
    nk = resource.natural_key
    plain = pl.col(nk.field).str.contains(r"^[\x20-\x7e]*$").fill_null(True).all() if nk else pl.lit(True)
    return bool(candidates.select(pl.col("id").is_not_null().all() & plain).item())


def _missing_references(cur: Cursor, fk: ForeignKey) -> pl.DataFrame:
    cur.execute(missing_reference_query(fk))
    return frame_of(cur.fetch_arrow_table()).select(
        pl.col("line").cast(pl.Int64),
        pl.lit(fk.field).alias("field"),
        pl.lit(fk.rule).alias("rule"),
        pl.lit(missing_message(fk)).alias("message"),
    )


def frame_of(table: object) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame
