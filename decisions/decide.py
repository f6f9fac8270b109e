"""A chunk's outcome, row by row: the record rules' verdict, the database's facts and the
keys accepted earlier in the file decide which rows load and which are rejected, and why.

Pure: the facts come in as `DatabaseFacts` (`decisions/checks.py` asks for them).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from decisions.keys import SeenKeys
from decisions.rules import RecordCheck, check_records, empty_rejects, line_rejects, reject_entries
from schemas.columns import (
    ACCEPTED,
    GIVEN_ID,
    HOLDER,
    IN_TABLE,
    KEY,
    LINE,
    OK,
    RECORDED,
    REFUSED,
    RESOLVED_ID,
    TAKEN,
    duplicate_flag,
)
from schemas.parameters import WriteMode
from schemas.resource import Resource, RuleContext

ALREADY_EXISTS = "already_exists"
"""`--mode insert`: the row's id or natural key is in the table already."""
NOT_FOUND = "not_found"
"""`--mode update`: the row's id (an id-less row: its natural key) is not in the table."""


@dataclass(frozen=True)
class DatabaseFacts:
    """What the database says about a chunk's candidate rows (see `decisions/checks.py`)."""

    missing_references: pl.DataFrame
    """(line, field, rule, message) of rows whose referenced row does not exist."""
    keys: pl.DataFrame
    """`_line`, KEY, RESOLVED_ID, HOLDER for the rows where any of them matters."""
    recorded_rejects: pl.Series | None = None
    """For a chunk an earlier run committed: the lines it rejected (its decision stands)."""
    ids_exist: bool = False
    """Whether the table holds any of the candidates' given ids already."""
    in_table: pl.Series | None = None
    """Lines whose row is in the table (see `decisions.sql.in_table_query`); looked up
    only for the write modes that need it."""


def no_facts() -> DatabaseFacts:
    """Facts of an empty database (pure tests, and rows with nothing to look up)."""
    return DatabaseFacts(
        missing_references=pl.DataFrame(
            schema={"line": pl.Int64, "field": pl.String, "rule": pl.String, "message": pl.String}
        ),
        keys=pl.DataFrame(schema={LINE: pl.Int64, KEY: pl.String, RESOLVED_ID: pl.String, HOLDER: pl.String}),
    )


@dataclass(frozen=True)
class CheckedChunk:
    """A chunk after every check and the in-file key decision: rows to load and rejects."""

    index: int
    rows_read: int
    rows: pl.DataFrame
    """Typed rows accepted, with `_line` and their ids resolved, ready for the upsert."""
    rejects: pl.DataFrame
    source: pl.DataFrame
    """The chunk's readable records as text, to report rows the load itself refuses."""
    released_holders: frozenset[str] = frozenset()
    """Ids holding a key in the table that an earlier chunk of this file re-keys: while that
    chunk is in flight the key still looks taken (wait and retry, do not reject)."""
    all_new: bool = False
    """When checked, the table held none of the rows' ids (given or resolved), so the load
    may append them straight into the table. Only a hint: should one be there after all,
    the primary key refuses the append and the load redoes the chunk as an upsert."""

    def rejects_for(self, resource: Resource, lines: pl.Series, *, field: str, rule: str, message: str) -> pl.DataFrame:
        """Reject entries for the given lines, with their values and records as read."""
        return line_rejects(self.source, resource, lines, field=field, rule=rule, message=message)


def dedupe_keys(resource: Resource) -> list[tuple[str, str, pl.Expr]]:
    """The in-file unique keys: (field, rule id, key expression over a decided chunk)."""
    keys = [("id", "duplicate_id", pl.col("id"))]
    nk = resource.natural_key
    if nk is not None:
        keys.append((nk.field, f"duplicate_{nk.field}", pl.col(KEY)))
    return keys


def decide(
    resource: Resource, check: RecordCheck, facts: DatabaseFacts, seen: SeenKeys, mode: WriteMode = "upsert"
) -> CheckedChunk:
    """The chunk's outcome, row by row, and the keys it claims in `seen`.

    A row is accepted when it passes the record rules and the database checks and no
    earlier accepted row of the file has its id or natural key. A row rejected for any
    reason claims nothing, so a later valid twin of it is accepted: first *accepted*
    occurrence wins. Ids and natural keys are compared as the database resolves and folds
    them, so the decision is the unique indexes' own.

    Three steps, so the rows and the keys may live apart (the Dask runner keeps rows on
    the workers and only keys travel): `chunk_keys` (where the rows are), `decide_keys`
    (in file order, where `seen` is), `apply_decision` (where the rows are).
    """
    return apply_decision(resource, check, decide_keys(resource, chunk_keys(resource, check, facts), seen, mode))


@dataclass(frozen=True)
class ChunkKeys:
    """What the in-file key decision needs of a chunk: its candidates' keys, no values."""

    candidates: pl.DataFrame
    """`schemas.frames.Candidates`."""
    missing_references: pl.DataFrame
    ids_exist: bool


@dataclass(frozen=True)
class KeyDecision:
    """The in-file key decision of one chunk, per candidate line."""

    outcome: pl.DataFrame
    """`schemas.frames.Decision`."""
    missing_references: pl.DataFrame
    released_holders: frozenset[str]
    all_new: bool


def chunk_keys(resource: Resource, check: RecordCheck, facts: DatabaseFacts) -> ChunkKeys:
    """The candidates' keys, ids resolved and keys folded as the database does."""
    nk = resource.natural_key
    columns = [LINE, "id", *([nk.field] if nk else [])]
    rows = _with_key_facts(resource, check.flagged.filter(pl.col(OK)).select(columns), facts)
    recorded = facts.recorded_rejects
    candidates = rows.select(
        LINE,
        "id",
        GIVEN_ID,
        KEY,
        HOLDER,
        (~pl.col(LINE).is_in(facts.missing_references["line"].implode())).alias(OK),
        (pl.col(LINE).is_in(recorded.implode()) if recorded is not None else pl.lit(False)).alias(RECORDED),
        (pl.col(LINE).is_in(in_table.implode()) if (in_table := facts.in_table) is not None else pl.lit(False)).alias(
            IN_TABLE
        ),
    )
    return ChunkKeys(candidates, facts.missing_references, facts.ids_exist)


def decide_keys(resource: Resource, keys: ChunkKeys, seen: SeenKeys, mode: WriteMode = "upsert") -> KeyDecision:
    """Which candidates win their keys, given the keys accepted earlier in the file (`seen`,
    which the winners join), and which the write mode refuses. Chunks must come here in
    file order."""
    rows = keys.candidates
    rows = rows.with_columns(_taken(resource, rows, pl.col(OK), seen))
    # a chunk committed earlier: its rejects are in the ledger and its decision stands
    rows = rows.with_columns((pl.col(OK) & ~pl.col(RECORDED)).alias(OK))
    rows = rows.with_columns(_refused(mode, rows, seen))
    rows = rows.with_columns(
        (pl.col(TAKEN) & pl.col(REFUSED).is_null()).alias(TAKEN),
        (pl.col(OK) & ~pl.col(TAKEN) & pl.col(REFUSED).is_null()).alias(OK),
    )
    marked = mark_duplicates(resource, rows, seen)
    dup_columns = [duplicate_flag(name) for name, _, _ in dedupe_keys(resource)]
    return KeyDecision(
        outcome=marked.select(
            LINE, "id", GIVEN_ID, HOLDER, TAKEN, IN_TABLE, REFUSED, *dup_columns, pl.col(OK).alias(ACCEPTED)
        ),
        missing_references=keys.missing_references,
        released_holders=_released_holders(rows, seen),
        # An id-less row may resolve to the id of the row holding its key: not known as new.
        all_new=not keys.ids_exist and marked.filter(pl.col(OK) & pl.col(GIVEN_ID).is_null()).is_empty(),
    )


def _refused(mode: WriteMode, rows: pl.DataFrame, seen: SeenKeys) -> pl.Series:
    """The write mode's verdict on the rows still accepted: the rule refusing each, or null.

    `insert` refuses a row whose id is in the table (an id accepted earlier in this file is
    left to the duplicate check: whether its chunk has loaded yet must not matter) or whose
    natural key another id holds; `update` refuses a row that is not in the table."""
    if mode == "insert":
        unseen_in_table = rows.get_column(IN_TABLE) & ~seen.seen_before("id", rows.get_column("id"))
        refused = unseen_in_table | rows.get_column(TAKEN)
        rule = ALREADY_EXISTS
    elif mode == "update":
        refused, rule = ~rows.get_column(IN_TABLE), NOT_FOUND
    else:
        refused, rule = pl.Series([False] * rows.height, dtype=pl.Boolean), ""
    return rows.select(pl.when(pl.col(OK) & refused).then(pl.lit(rule)).otherwise(None).alias(REFUSED)).to_series()


def apply_decision(resource: Resource, check: RecordCheck, decision: KeyDecision) -> CheckedChunk:
    """The chunk's rows to load and its rejects, by the record rules and `decision`."""
    marked = check.flagged.drop("id").join(decision.outcome, on=LINE, how="left", maintain_order="left")
    rejects = pl.concat(
        [
            check.rejects,
            _reference_rejects(resource, check.source, decision.missing_references),
            _taken_rejects(resource, marked),
            _refusal_rejects(resource, marked),
            duplicate_rejects(resource, marked),
        ]
    )
    return CheckedChunk(
        index=check.index,
        rows_read=check.rows_read,
        rows=marked.filter(pl.col(ACCEPTED)).select(LINE, *resource.field_names),
        rejects=rejects,
        source=check.source,
        released_holders=decision.released_holders,
        all_new=decision.all_new,
    )


def _with_key_facts(resource: Resource, flagged: pl.DataFrame, facts: DatabaseFacts) -> pl.DataFrame:
    """Resolve ids of id-less rows and fold natural keys as the database does."""
    nk = resource.natural_key
    joined = flagged.join(facts.keys, on=LINE, how="left")
    polars_key = nk.normalize(pl.col(nk.field)) if nk else pl.lit(None, pl.String)
    return joined.with_columns(
        pl.coalesce(KEY, polars_key).alias(KEY),
        pl.col("id").alias(GIVEN_ID),
        pl.coalesce("id", RESOLVED_ID).alias("id"),
    )


def _taken(resource: Resource, rows: pl.DataFrame, passed: pl.Expr, seen: SeenKeys) -> pl.Series:
    """True where the row's natural key is held in the table by another id — unless that
    id is accepted earlier in this file (an earlier chunk, or an earlier line of this one
    that passes), whose own row then decides: a duplicate, or the key moved away."""
    hit = (pl.col(GIVEN_ID).is_not_null() & pl.col(HOLDER).is_not_null()).fill_null(False)
    if resource.natural_key is None or not rows.select(hit.any()).item():
        return pl.Series(TAKEN, [False] * rows.height, dtype=pl.Boolean)  # a first load, and most others
    earlier = (
        rows.filter(passed & ~hit).group_by("id").agg(pl.col(LINE).min().alias("_holder_line")).rename({"id": HOLDER})
    )
    judged = rows.select(LINE, HOLDER, hit.alias("_hit")).join(earlier, on=HOLDER, how="left", maintain_order="left")
    moved_here = (pl.col("_holder_line") < pl.col(LINE)).fill_null(False)
    in_file = judged.select(moved_here).to_series() | seen.seen_before("id", judged.get_column(HOLDER))
    return (judged.get_column("_hit") & ~in_file).alias(TAKEN)


def _released_holders(rows: pl.DataFrame, seen: SeenKeys) -> frozenset[str]:
    holders = rows.get_column(HOLDER).drop_nulls() if HOLDER in rows.columns else pl.Series([], dtype=pl.String)
    return frozenset(holders.filter(seen.seen_before("id", holders)).to_list()) if holders.len() else frozenset()


def _reference_rejects(resource: Resource, source: pl.DataFrame, missing: pl.DataFrame) -> pl.DataFrame:
    if missing.height == 0:
        return empty_rejects()
    groups = missing.group_by(["field", "rule", "message"], maintain_order=True)
    return pl.concat(
        [
            line_rejects(source, resource, group["line"], field=str(field_name), rule=str(rule), message=str(message))
            for (field_name, rule, message), group in groups
        ]
    )


def _taken_rejects(resource: Resource, marked: pl.DataFrame) -> pl.DataFrame:
    nk = resource.natural_key
    if nk is None or not marked.get_column(TAKEN).any():
        return empty_rejects()
    hits = marked.filter(pl.col(TAKEN))
    message = pl.concat_str(
        pl.lit(f"{nk.field} is already used by another {resource.name[:-1]} (id "), HOLDER, pl.lit(")")
    )
    return reject_entries(hits, resource, field=nk.field, rule=nk.taken_rule, message=message)


def _refusal_rejects(resource: Resource, marked: pl.DataFrame) -> pl.DataFrame:
    """The write mode's rejects: on the id when the row came with one, else on its natural key."""
    refused = marked.filter(pl.col(REFUSED).is_not_null())
    if refused.is_empty():
        return empty_rejects()
    nk = resource.natural_key
    on_id = pl.col(GIVEN_ID).is_not_null() & (pl.col(IN_TABLE) | (pl.col(REFUSED) == NOT_FOUND))
    parts = []
    for (rule, by_id), rows in refused.group_by([REFUSED, on_id.alias("_on_id")], maintain_order=True):
        field = "id" if by_id or nk is None else nk.field
        parts.append(
            reject_entries(
                rows, resource, field=field, rule=str(rule), message=refusal_message(resource, str(rule), field)
            )
        )
    return pl.concat(parts)


def taken_refusal(resource: Resource, mode: WriteMode) -> tuple[str, str]:
    """(rule, message) of a row whose natural key another row holds, found when the rows
    are checked again at load: `already_exists` for an insert, else the key's own rule."""
    nk = resource.natural_key
    assert nk is not None, "only a resource with a natural key has keys to take"
    if mode == "insert":
        return ALREADY_EXISTS, refusal_message(resource, ALREADY_EXISTS, nk.field)
    return nk.taken_rule, f"{nk.field} is already used by another {resource.name[:-1]}"


def presence_rule(mode: WriteMode) -> str:
    """The rule refusing a row by whether the table holds it (insert, update)."""
    return ALREADY_EXISTS if mode == "insert" else NOT_FOUND


def refusal_message(resource: Resource, rule: str, field: str) -> str:
    """Why the write mode refused a row, in the reject report."""
    one = resource.name[:-1]
    if rule == ALREADY_EXISTS:
        return f"a {one} with this {field} is already in {resource.name}: --mode insert only adds new rows"
    return f"no {one} has this {field}: --mode update only changes rows already in {resource.name}"


def mark_duplicates(resource: Resource, rows: pl.DataFrame, seen: SeenKeys) -> pl.DataFrame:
    """Flag later occurrences of a key among the rows still accepted (`_ok`).

    The first accepted occurrence wins (earlier chunks first, via `seen`); later ones get one
    `_dup_<field>` flag per duplicated key and lose `_ok`. The winners' keys join `seen`.
    """
    flags, valid_keys = [], {}
    for name, _, key in dedupe_keys(resource):
        # Rows already rejected get a null key, so they never count as an occurrence.
        valid_key = rows.select(pl.when(pl.col(OK)).then(key)).to_series()
        earlier_in_chunk = ~valid_key.is_first_distinct() & valid_key.is_not_null()
        flags.append((earlier_in_chunk | seen.seen_before(name, valid_key)).alias(duplicate_flag(name)))
        valid_keys[name] = valid_key
    dup_columns = [duplicate_flag(name) for name, _, _ in dedupe_keys(resource)]
    marked = rows.with_columns(flags)
    marked = marked.with_columns((pl.col(OK) & ~pl.any_horizontal(dup_columns)).alias(OK))
    ok = marked.get_column(OK)
    for name, valid_key in valid_keys.items():
        seen.add(name, valid_key.filter(ok))
    return marked


def duplicate_rejects(resource: Resource, marked: pl.DataFrame) -> pl.DataFrame:
    """One entry per duplicated key; an id-less row's id comes from its natural key, so a
    duplicate natural key is reported alone."""
    nk = resource.natural_key
    parts = []
    for name, rule, _ in dedupe_keys(resource):
        hit = pl.col(duplicate_flag(name))
        if name == "id" and nk is not None and GIVEN_ID in marked.columns:
            hit = hit & ~(pl.col(GIVEN_ID).is_null() & pl.col(duplicate_flag(nk.field)))
        if not marked.select(hit.any()).item():
            continue
        hits = marked.filter(hit)
        message = f"{name} already appears on an earlier line of this file"
        parts.append(reject_entries(hits, resource, field=name, rule=rule, message=message))
    return pl.concat(parts) if parts else empty_rejects()


def check_chunk(
    resource: Resource,
    context: RuleContext,
    index: int,
    chunk: pl.DataFrame,
    seen: SeenKeys,
    facts: DatabaseFacts | None = None,
    mode: WriteMode = "upsert",
) -> CheckedChunk:
    """Record rules, then the key decision given what the database says (default: nothing
    in the database). The flow runs the two steps apart, with the database checks between."""
    return decide(resource, check_records(resource, context, index, chunk), facts or no_facts(), seen, mode)
