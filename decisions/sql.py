"""The SQL text of imports and exports, built by pure functions with quoted identifiers.

Nothing here touches a database: every function takes names and definitions and returns a
statement (values always travel as `$n` parameters or bound settings, never in the text),
so the text is unit-tested as text, and `tests/test_load_plans.py` runs EXPLAIN on it.

The chunk checks have one possible plan whatever the statistics say: the stage is the outer
side of a LATERAL subquery with LIMIT 1, which PostgreSQL cannot flatten, so each staged row
probes the target's index once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from schemas.columns import CHANGE_COLUMN, HOLDER, KEY, LINE, RESOLVED_ID, STAGED_CHUNK
from schemas.resource import PG_TYPES, FilterOp, ForeignKey, Resource

CHECK_STAGE = "_bulkflow_check"
"""Temporary table of a chunk's candidate keys, for the read-only checks."""
STAGE = "_bulkflow_stage"
"""Temporary table of a chunk's accepted rows, for the upsert."""


def ident(name: str) -> str:
    """A SQL identifier, quoted (a `"` inside is doubled)."""
    return '"' + name.replace('"', '""') + '"'


def _columns(names: Sequence[str], prefix: str = "") -> str:
    return ", ".join(prefix + ident(name) for name in names)


# --- chunk checks ------------------------------------------------------------------------


def missing_reference_query(fk: ForeignKey, stage: str = CHECK_STAGE) -> str:
    """Lines of staged rows whose `fk.field` matches no row of the referenced table."""
    column = ident(fk.field)
    return (
        f"SELECT s.{ident(LINE)} AS line FROM {ident(stage)} s "
        f"LEFT JOIN LATERAL (SELECT 1 AS found FROM {ident(fk.references)} r "
        f"WHERE r.{ident('id')} = s.{column} LIMIT 1) r ON true "
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
    staged_key = nk.sql(f"s.{ident(nk.field)}")
    held_key = nk.sql(f"t.{ident(nk.field)}")
    given_id, holder = f"s.{ident('id')}", f"h.{ident('id')}"
    derived_id = _derived_id(resource, staged_key)
    return (
        f"SELECT s.{ident(LINE)}, "
        f"CASE WHEN {staged_key} IS DISTINCT FROM s.{ident(KEY)} THEN {staged_key} END AS {ident(KEY)}, "
        f"CASE WHEN {given_id} IS NULL THEN coalesce({holder}, {derived_id}) END AS {ident(RESOLVED_ID)}, "
        f"CASE WHEN {given_id} <> {holder} THEN {holder} END AS {ident(HOLDER)} "
        f"FROM {ident(stage)} s "
        f"LEFT JOIN LATERAL (SELECT t.{ident('id')} FROM {ident(resource.name)} t "
        f"WHERE {held_key} = {staged_key} LIMIT 1) h ON true "
        f"WHERE {given_id} IS NULL OR {given_id} <> {holder} OR {staged_key} IS DISTINCT FROM s.{ident(KEY)}"
    )


def taken_query(resource: Resource, stage: str, *, whole_file: bool = False) -> str | None:
    """(line, holder) of staged rows whose natural key another id holds in the table. With
    `whole_file` (the stage holds every accepted row of the file, written in line order),
    a holder staged on an earlier line moves its key first, so its key is not taken."""
    nk = resource.natural_key
    if nk is None:
        return None
    staged_key, held_key = nk.sql(f"s.{ident(nk.field)}"), nk.sql(f"t.{ident(nk.field)}")
    query = (
        f"SELECT s.{ident(LINE)} AS line, h.{ident('id')} AS {ident(HOLDER)} FROM {ident(stage)} s "
        f"JOIN LATERAL (SELECT t.{ident('id')} FROM {ident(resource.name)} t "
        f"WHERE {held_key} = {staged_key} AND t.{ident('id')} <> s.{ident('id')} LIMIT 1) h ON true"
    )
    if whole_file:
        query += (
            f" WHERE NOT EXISTS (SELECT 1 FROM {ident(stage)} e WHERE e.{ident('id')} = h.{ident('id')} "
            f"AND e.{ident(LINE)} < s.{ident(LINE)})"
        )
    return query


def any_id_exists_query(resource: Resource, stage: str = CHECK_STAGE) -> str:
    """Whether any staged id is in the table already (stops at the first one)."""
    return (
        f"SELECT EXISTS (SELECT 1 FROM {ident(stage)} s JOIN LATERAL (SELECT 1 FROM {ident(resource.name)} t "
        f"WHERE t.{ident('id')} = s.{ident('id')} LIMIT 1) t ON true WHERE s.{ident('id')} IS NOT NULL)"
    )


def in_table_query(resource: Resource, stage: str = CHECK_STAGE, *, absent: bool = False) -> str:
    """Lines of staged rows whose id is in the table (`absent`: is not); an id-less row's id
    is its key's holder or the id derived from its key (as `key_facts_query` resolves it)."""
    nk = resource.natural_key
    own_id = f"s.{ident('id')}"
    if nk is not None:
        own_id = f"coalesce({own_id}, {_derived_id(resource, nk.sql(f's.{ident(nk.field)}'))})"
    query = (
        f"SELECT s.{ident(LINE)} AS line FROM {ident(stage)} s "
        f"LEFT JOIN LATERAL (SELECT 1 AS found FROM {ident(resource.name)} t "
        f"WHERE t.{ident('id')} = {own_id} LIMIT 1) i ON true "
    )
    if nk is None:
        found = "i.found IS NOT NULL"
    else:
        query += (
            f"LEFT JOIN LATERAL (SELECT 1 AS found FROM {ident(resource.name)} t WHERE s.{ident('id')} IS NULL "
            f"AND {nk.sql(f't.{ident(nk.field)}')} = {nk.sql(f's.{ident(nk.field)}')} LIMIT 1) k ON true "
        )
        found = "(i.found IS NOT NULL OR k.found IS NOT NULL)"
    return query + f"WHERE {'NOT ' if absent else ''}{found}"


def _derived_id(resource: Resource, key: str) -> str:
    """The id an id-less row gets when no row holds its key: derived from the key, so a
    re-import of the same row finds it again."""
    return f"md5({_text_literal(resource.name + ':')} || {key})::uuid::text"


ASCII_PROBE = "".join(chr(c) for c in range(32, 127))
"""Every printable ASCII character: how the database folds them tells whether its folding of
ASCII keys is polars' own."""


def first_load_probe(resource: Resource) -> str:
    """Whether the table is empty, and `ASCII_PROBE` folded as the natural key's unique
    index folds it (NULL without a natural key)."""
    nk = resource.natural_key
    folded = nk.sql(_text_literal(ASCII_PROBE)) if nk else "NULL"
    return f"SELECT NOT EXISTS (SELECT 1 FROM {ident(resource.name)}), {folded}"


def recorded_rejects_query() -> str:
    """Lines an earlier run rejected in chunk $2 of job $1."""
    return "SELECT DISTINCT line FROM import_rejects WHERE job_key = $1 AND chunk_index = $2"


# --- chunk load --------------------------------------------------------------------------


def upsert_sql(resource: Resource, stage: str = STAGE) -> str:
    """Upsert the stage into the table, in file order (so a row that frees a key comes
    before a later row that takes it); returns (inserted, updated, unchanged). A row whose
    stored values already equal the staged ones is not written (no new tuple, no trigger):
    it is unchanged."""
    columns = _columns(resource.field_names)
    values = [c for c in resource.field_names if c != "id"]
    # Stamping the writer here spares each updated row the trigger's call (its WHEN is false).
    updates = ", ".join([*(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in values), _STAMPED])
    stored, incoming = _columns(values, "t."), _columns(values, "EXCLUDED.")
    return (
        f"WITH up AS (INSERT INTO {ident(resource.name)} AS t ({columns}) SELECT {columns} FROM {ident(stage)} "
        f"ORDER BY {ident(LINE)} ON CONFLICT ({ident('id')}) DO UPDATE SET {updates} "
        f"WHERE ({stored}) IS DISTINCT FROM ({incoming}) RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted), "
        f"(SELECT count(*) FROM {ident(stage)}) - count(*) FROM up"
    )


_STAMPED = f"{ident(CHANGE_COLUMN)} = pg_current_xact_id()"


def predict_sql(resource: Resource, stage: str = STAGE, *, by_chunk: bool = False) -> str:
    """What `upsert_sql` would do with the stage, read-only: (inserted, updated, unchanged),
    or with `by_chunk` one row (chunk, inserted, updated, unchanged) per staged chunk. The
    staged values are cast to the table's column types first, as the upsert's assignment
    does, so "unchanged" is the upsert's own comparison."""
    values = [f for f in resource.fields if f.name != "id"]
    stored = _columns([f.name for f in values], "t.")
    incoming = ", ".join(f"s.{ident(f.name)}::{PG_TYPES[f.kind]}" for f in values)
    same = f"({stored}) IS NOT DISTINCT FROM ({incoming})"
    found = f"t.{ident('id')} IS NOT NULL"
    chunk = f"s.{ident(STAGED_CHUNK)}"
    return (
        f"SELECT {chunk + ', ' if by_chunk else ''}count(*) FILTER (WHERE NOT {found}), "
        f"count(*) FILTER (WHERE {found} AND NOT {same}), count(*) FILTER (WHERE {found} AND {same}) "
        f"FROM {ident(stage)} s LEFT JOIN {ident(resource.name)} t ON t.{ident('id')} = s.{ident('id')}"
        + (f" GROUP BY {chunk} ORDER BY {chunk}" if by_chunk else "")
    )


# --- all-or-nothing jobs -----------------------------------------------------------------


def staging_table(job_key: str) -> str:
    """The job-scoped table an all-or-nothing job stages its accepted rows in, until they
    are applied in one transaction (a name derived from the job, so any run finds it)."""
    return "_bulkflow_job_" + hashlib.sha256(job_key.encode()).hexdigest()[:24]


def create_staging_sql(resource: Resource, table: str) -> str:
    """The staging table: the chunk and line of each row, then the resource's declared
    columns (not the table's own bookkeeping, such as its last writer)."""
    columns = ", ".join(f"{ident(f.name)} {PG_TYPES[f.kind]}" for f in resource.fields)
    return (
        f"CREATE TABLE IF NOT EXISTS {ident(table)} "
        f"({ident(STAGED_CHUNK)} integer NOT NULL, {ident(LINE)} bigint NOT NULL, {columns})"
    )


def staged_chunk_sql(resource: Resource, staging: str, chunk: int, stage: str = STAGE) -> tuple[str, str]:
    """Statements that copy chunk `chunk` of a staging table into a temporary `stage` of
    the chunk's shape (line, declared columns), gone with the transaction: what the chunk
    load's writes (`upsert_sql`, `insert_sql`) read."""
    columns = _columns([LINE, *resource.field_names])
    return (
        f"DROP TABLE IF EXISTS pg_temp.{ident(stage)}",
        f"CREATE TEMPORARY TABLE {ident(stage)} ON COMMIT DROP AS SELECT {columns} FROM {ident(staging)} "
        f"WHERE {ident(STAGED_CHUNK)} = {int(chunk)}",
    )


def staging_chunk_index_sql(table: str) -> str:
    """A block-range index of the staging table's chunks: the apply begun as the chunks are
    staged reads each chunk back by it (the rows of a chunk lie together, so its ranges are
    few and the index costs the staging next to nothing)."""
    return f"CREATE INDEX IF NOT EXISTS {ident(table + '_chunks')} ON {ident(table)} USING brin ({ident(STAGED_CHUNK)})"


def analyze_sql(table: str) -> str:
    """Statistics of a freshly filled table, so the apply's joins over it are planned by its
    real size (a never-analyzed table looks tiny, and so does a table bulk-loaded since its
    last analyze: a replace's anti-join went quadratic, 1M rows ran for minutes)."""
    return f"ANALYZE {ident(table)}"


def drop_staging_sql(table: str) -> str:
    return f"DROP TABLE IF EXISTS {ident(table)}"


def lock_for_apply_sql(resource: Resource) -> str:
    """Keep other writers of the table out while the staged rows are applied (readers go
    on), so what the apply counts is what it writes."""
    return f"LOCK TABLE {ident(resource.name)} IN SHARE ROW EXCLUSIVE MODE"


def staged_rejects_sql(table: str, refused: str) -> str:
    """Reject entries for the staged rows listed in `refused` (line, field, rule, message),
    for job $1: the value of the field and the row as JSON (the accepted record)."""
    row = f"to_jsonb(s) - {_text_literal(STAGED_CHUNK)} - {_text_literal(LINE)}"
    return (
        "INSERT INTO import_rejects (job_key, chunk_index, line, field, rule, message, value, raw) "
        f"SELECT $1, s.{ident(STAGED_CHUNK)}, s.{ident(LINE)}, r.field, r.rule, r.message, "
        f"({row}) ->> r.field, ({row})::text "
        f"FROM {ident(refused)} r JOIN {ident(table)} s ON s.{ident(LINE)} = r.line"
    )


def count_staged_rejects_sql(table: str, refused: str) -> str:
    """Add the refused rows to their chunks' `rejected` in the ledger of job $1."""
    return (
        "UPDATE import_chunks c SET rejected = c.rejected + n.lines FROM "
        f"(SELECT s.{ident(STAGED_CHUNK)} AS chunk, count(DISTINCT s.{ident(LINE)}) AS lines "
        f"FROM {ident(table)} s WHERE s.{ident(LINE)} IN (SELECT line FROM {ident(refused)}) "
        f"GROUP BY 1) n WHERE c.job_key = $1 AND c.chunk_index = n.chunk"
    )


def gone_table_sql(gone: str) -> str:
    """A temporary set of ids that a replace deletes (gone with the transaction)."""
    return f"CREATE TEMPORARY TABLE IF NOT EXISTS {ident(gone)} ({ident('id')} text PRIMARY KEY) ON COMMIT DROP"


def collect_gone_sql(resource: Resource, staging: str, gone: str) -> str:
    """The table's rows that are not among the staged (accepted) rows: what a replace deletes."""
    return (
        f"INSERT INTO {ident(gone)} SELECT t.{ident('id')} FROM {ident(resource.name)} t "
        f"WHERE NOT EXISTS (SELECT 1 FROM {ident(staging)} s WHERE s.{ident('id')} = t.{ident('id')})"
    )


def referenced_gone_sql(dependent: Resource, fk: ForeignKey, gone: str) -> str:
    """(rows of `dependent` referencing a gone id, gone ids they reference)."""
    return (
        f"SELECT count(*), count(DISTINCT d.{ident(fk.field)}) FROM {ident(dependent.name)} d "
        f"WHERE d.{ident(fk.field)} IN (SELECT {ident('id')} FROM {ident(gone)})"
    )


def collect_dependents_sql(dependent: Resource, fk: ForeignKey, gone: str, dependent_gone: str) -> str:
    """Add to `dependent_gone` the rows of `dependent` that reference a gone id."""
    return (
        f"INSERT INTO {ident(dependent_gone)} SELECT d.{ident('id')} FROM {ident(dependent.name)} d "
        f"WHERE d.{ident(fk.field)} IN (SELECT {ident('id')} FROM {ident(gone)}) ON CONFLICT DO NOTHING"
    )


def count_gone_sql(gone: str) -> str:
    """How many ids a set of gone ids holds (a replace's dry run: what it would delete)."""
    return f"SELECT count(*) FROM {ident(gone)}"


def delete_gone_sql(resource: Resource, gone: str) -> str:
    return f"DELETE FROM {ident(resource.name)} WHERE {ident('id')} IN (SELECT {ident('id')} FROM {ident(gone)})"


def unstage_sql(table: str, refused: str) -> str:
    return f"DELETE FROM {ident(table)} WHERE {ident(LINE)} IN (SELECT line FROM {ident(refused)})"


def insert_sql(resource: Resource, stage: str = STAGE, *, chunk: int | None = None) -> str:
    """Insert the stage into the table (ids known to be new); of a staging table, `chunk` alone."""
    columns = _columns(resource.field_names)
    only = f" WHERE {ident(STAGED_CHUNK)} = {int(chunk)}" if chunk is not None else ""
    return f"INSERT INTO {ident(resource.name)} ({columns}) SELECT {columns} FROM {ident(stage)}{only}"


def any_existing_sql(resource: Resource, stage: str = STAGE) -> str:
    """Whether the table holds any staged id."""
    return (
        f"SELECT EXISTS (SELECT 1 FROM {ident(stage)} s WHERE EXISTS "
        f"(SELECT 1 FROM {ident(resource.name)} t WHERE t.{ident('id')} = s.{ident('id')}))"
    )


def stage_line_index_sql(stage: str = STAGE) -> str:
    return f"CREATE INDEX ON {ident(stage)} ({ident(LINE)})"


def delete_stage_line_sql(stage: str = STAGE) -> str:
    """Drop the staged row of line $1."""
    return f"DELETE FROM {ident(stage)} WHERE {ident(LINE)} = $1"


# --- export ------------------------------------------------------------------------------


PARTITION_COLUMN = "_bulkflow_partition"
"""The column a partitioned export's SELECT adds: each row's partition value, as text."""

_GRAIN_FORMATS = {"day": "YYYY-MM-DD", "month": "YYYY-MM", "year": "YYYY"}


def partition_value_sql(field: str, grain: str | None) -> str:
    """A row's partition value as text: the field's own (`true`, `admin`), or its UTC day,
    month or year (`2024-05-01`, `2024-05`, `2024`), whose text order is time order."""
    if grain is None:
        return f"{ident(field)}::text"
    return f"to_char({ident(field)} AT TIME ZONE 'UTC', {_text_literal(_GRAIN_FORMATS[grain])})"


def export_select(
    table: str,
    fields: Sequence[str],
    conditions: Sequence[tuple[str, FilterOp, str, str]],
    limit_setting: str | None = None,
    changed_since: str | None = None,
    partition_value: str | None = None,
) -> str:
    """`SELECT fields FROM table [WHERE ...] ORDER BY id [LIMIT ...]`; each condition is
    (field, operator, setting, PostgreSQL type): the value is read from the
    transaction-local setting, cast to the field's type; so is the limit, from its own.
    With `changed_since` (a cursor's snapshot), only the rows written since it. With
    `partition_value` (`partition_value_sql`), each row's value as `PARTITION_COLUMN`, the
    rows ordered by it first: a partition's rows come together (a limit still takes the
    first rows by id)."""
    if partition_value is None:
        sql = f"SELECT {_columns(fields)} FROM {ident(table)}{_export_where(conditions, changed_since)}"
        sql += f" ORDER BY {ident('id')}"
        return sql + (f" LIMIT {_limit(limit_setting)}" if limit_setting is not None else "")
    columns = f"{_columns(fields)}, {partition_value} AS {ident(PARTITION_COLUMN)}"
    rows = _exported_rows(table, conditions, changed_since, limit_setting)
    return f"SELECT {columns} FROM {rows} ORDER BY {ident(PARTITION_COLUMN)}, {ident('id')}"


def partition_census_sql(
    table: str,
    conditions: Sequence[tuple[str, FilterOp, str, str]],
    changed_since: str | None,
    partition_value: str,
    limit_setting: str | None = None,
) -> str:
    """How many partitions the export's rows fall in (no value counts as one) and the
    longest value's bytes: checked before a partitioned export writes a file. A GROUP BY,
    which the planner hashes: about a third of the time of `count(DISTINCT ...)`, which sorts."""
    rows = _exported_rows(table, conditions, changed_since, limit_setting)
    groups = f"SELECT max(octet_length({partition_value})) AS longest FROM {rows} GROUP BY {partition_value}"
    return f"SELECT count(*), coalesce(max(longest), 0) FROM ({groups}) AS partitions"


def _exported_rows(
    table: str,
    conditions: Sequence[tuple[str, FilterOp, str, str]],
    changed_since: str | None,
    limit_setting: str | None,
) -> str:
    """What a partitioned export reads from: the table and its conditions, or, under a
    limit, the first rows by id that match them (named as the table)."""
    where = _export_where(conditions, changed_since)
    if limit_setting is None:
        return f"{ident(table)}{where}"
    first = f"SELECT * FROM {ident(table)}{where} ORDER BY {ident('id')} LIMIT {_limit(limit_setting)}"
    return f"({first}) AS {ident(table)}"


def _limit(setting: str) -> str:
    return f"current_setting({_text_literal(setting)})::bigint"


def _export_where(conditions: Sequence[tuple[str, FilterOp, str, str]], changed_since: str | None) -> str:
    where = [
        f"{ident(field)} {op} current_setting({_text_literal(setting)})::{pg_type}"
        for field, op, setting, pg_type in conditions
    ]
    if changed_since is not None:
        where.append(_written_since(CHANGE_COLUMN, changed_since))
    return " WHERE " + " AND ".join(where) if where else ""


ONE_READ_ONLY_VIEW = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
"""The first statement of a transaction whose queries all see one snapshot, and write nothing."""


def joined_snapshot_sql(snapshot: str) -> str:
    """Join the snapshot another transaction exported (`pg_export_snapshot()`)."""
    return f"SET TRANSACTION SNAPSHOT {_text_literal(snapshot)}"


def row_estimate_sql(table: str) -> str:
    """The planner's estimate of `table`'s rows (0 when never analysed: -1 is clamped)."""
    return f"SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = {_text_literal(ident(table))}::regclass"


def id_sample_sql(table: str, percent: float) -> str:
    """The ids of about `percent` % of `table`'s pages, in the order an export writes them."""
    return f"SELECT {ident('id')} FROM {ident(table)} TABLESAMPLE SYSTEM ({percent:.6f}) ORDER BY {ident('id')}"


# --- incremental exports ---------------------------------------------------------------

CURSOR_SQL = "SELECT pg_current_snapshot()::text, now()"
"""The snapshot this transaction reads (the first statement of a repeatable-read
transaction fixes it) and the database's clock: the next export's cursor."""


def _written_since(column: str, snapshot: str) -> str:
    """Rows whose transaction `column` is not visible in `snapshot`: committed after it was
    taken, or still running then. The xmin bound lets the index on `column` find them.

    `snapshot` is written as a literal (so the planner knows the bound): a `Cursor` only
    holds digits, colons and commas."""
    snap = f"{_text_literal(snapshot)}::pg_snapshot"
    return f"{ident(column)} >= pg_snapshot_xmin({snap}) AND NOT pg_visible_in_snapshot({ident(column)}, {snap})"


def tombstones_sql(table: str, snapshot: str) -> str:
    """(id, _deleted_at) of each row of `table` deleted since `snapshot` and not there now
    (a row deleted, then inserted again, is a change, not a delete), by id."""
    return (
        f"SELECT t.id, max(t.deleted_at) AS _deleted_at FROM export_tombstones t "
        f"WHERE t.resource = {_text_literal(table)} AND {_written_since('deleted_xid', snapshot)} "
        f"AND NOT EXISTS (SELECT 1 FROM {ident(table)} r WHERE r.{ident('id')} = t.id) "
        "GROUP BY t.id ORDER BY t.id"
    )


def truncated_since_sql(table: str, snapshot: str) -> str:
    """When `table` was last truncated since `snapshot` (NULL: it was not). TRUNCATE fires
    no delete trigger, so its rows have no tombstones."""
    return (
        f"SELECT max(truncated_at) FROM export_truncations WHERE resource = {_text_literal(table)} "
        f"AND {_written_since('truncated_xid', snapshot)}"
    )


PRUNE_TOMBSTONES_SQL = (
    "DELETE FROM export_tombstones WHERE deleted_at < now() - make_interval(days => $1::int)",
    "DELETE FROM export_truncations WHERE truncated_at < now() - make_interval(days => $1::int)",
)
"""Forget deletes and truncations older than $1 days (cursors older than that are refused)."""

_OLD_JOBS = "SELECT job_key FROM import_jobs WHERE created_at < now() - make_interval(days => $1::int)"
PRUNE_HISTORY_SQL = (
    f"DELETE FROM import_rejects WHERE job_key IN ({_OLD_JOBS})",
    f"DELETE FROM import_chunks WHERE job_key IN ({_OLD_JOBS})",
    f"DELETE FROM import_runs WHERE job_key IN ({_OLD_JOBS})",
    "DELETE FROM import_jobs WHERE created_at < now() - make_interval(days => $1::int)",
    "DELETE FROM export_jobs WHERE created_at < now() - make_interval(days => $1::int)",
)
"""Forget the imports (jobs, runs, chunks, rejects) and exports older than $1 days: the
load history's horizon. A job forgotten so is imported again if its file comes back."""


def _text_literal(text: str) -> str:
    """A SQL string literal (a `'` inside is doubled)."""
    return "'" + text.replace("'", "''") + "'"
