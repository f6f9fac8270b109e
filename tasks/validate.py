"""Pure transforms: raw text columns in, typed rows and reject entries out.

Nothing here does I/O; every function takes and returns polars frames, so unit tests hit
them directly. The rules themselves live in `schemas/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from schemas.frames import (
    ACCEPTED,
    GIVEN_ID,
    HOLDER,
    KEY,
    LINE,
    OK,
    RAW_RECORD,
    READ_MESSAGE,
    READ_RULE,
    RECORDED,
    REJECT_COLUMNS,
    RESOLVED_ID,
    TAKEN,
    duplicate_flag,
)
from schemas.resource import INVALID_TYPE, POLARS_TYPES, RAW_SUFFIX, Resource, Rule, RuleContext, not_scalar, present

_UTC_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"
_FAST_TIMESTAMP = "%Y-%m-%dT%H:%M:%S%#z"
_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
_JSON_STRING_ARRAY = r'^\[\s*(?:"(?:[^"\\]|\\.)*"\s*(?:,\s*"(?:[^"\\]|\\.)*"\s*)*)?\]$'
YEARS = (1, 9999)
"""Timestamps outside these years are refused: ISO-8601's four-digit years, inside what
PostgreSQL, Arrow and every export format can hold."""
VALUE_EXCERPT = 1000
RAW_EXCERPT = 10_000
"""Reject entries quote a value or a record up to this many characters (then `…`)."""


def parse_boolean(text: pl.Expr) -> pl.Expr:
    """`true`/`false` (any case, surrounding blanks ignored) to Boolean; anything else null."""
    word = text.str.strip_chars().str.to_lowercase()
    return pl.when(word == "true").then(True).when(word == "false").then(False)


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """ISO-8601 to UTC; an offset-less timestamp or a date is taken as UTC. Unreadable or
    outside YEARS: null."""
    parsed = text.map_batches(_parse_timestamps, return_dtype=pl.Datetime("us", "UTC"))
    return pl.when(parsed.dt.year().is_between(*YEARS)).then(parsed)


def _parse_timestamps(text: pl.Series) -> pl.Series:
    # From the most common shape to the rarest, each parser reading only what the ones
    # before it could not: seconds and Z (a fixed format, three times faster than an offset
    # pattern), seconds and any offset, then the whole list of accepted shapes.
    parsed = text.str.to_datetime(_UTC_TIMESTAMP, strict=False, time_unit="us").dt.replace_time_zone("UTC")
    for parse in (_parse_offset_timestamps, _parse_any_timestamps):
        leftover = parsed.is_null() & text.is_not_null()
        if not leftover.any():
            break
        parsed = parsed.scatter(leftover.arg_true(), parse(text.filter(leftover)))
    return parsed


def _parse_offset_timestamps(text: pl.Series) -> pl.Series:
    return text.str.to_datetime(_FAST_TIMESTAMP, strict=False, time_zone="UTC", time_unit="us")


def _parse_any_timestamps(text: pl.Series) -> pl.Series:
    return pl.select(_parse_any_timestamp(pl.lit(text))).to_series()


def _parse_any_timestamp(text: pl.Expr) -> pl.Expr:
    iso = text.str.strip_chars().str.replace(r"[zZ]$", "+00:00").str.replace(" ", "T")
    with_offset = [
        iso.str.to_datetime(fmt, strict=False, time_zone="UTC", time_unit="us")
        for fmt in _TIMESTAMP_FORMATS
    ]
    naive = [
        iso.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC")
        for fmt in _NAIVE_FORMATS
    ]
    return pl.coalesce(*with_offset, *naive)


def parse_text_list(text: pl.Expr) -> pl.Expr:
    """A JSON array of strings (the CSV encoding of `tags`) to List(String); else null."""
    trimmed = text.str.strip_chars()
    well_formed = pl.when(trimmed.str.contains(_JSON_STRING_ARRAY)).then(trimmed)
    return well_formed.str.json_decode(pl.List(pl.String))


def format_text_list(values: pl.Expr) -> pl.Expr:
    """List(String) to the JSON array text that `parse_text_list` reads (the CSV encoding)."""
    encoded = pl.struct(values.cast(pl.List(pl.String)).alias("v")).struct.json_encode()
    return pl.when(values.is_not_null()).then(encoded.str.slice(5).str.strip_suffix("}"))


_PARSERS = {
    "boolean": parse_boolean,
    "timestamp": parse_timestamp,
    "text_list": parse_text_list,
}


def coerce(resource: Resource, frame: pl.LazyFrame) -> pl.LazyFrame:
    """Add typed columns for every field, keeping the text under `<field>__raw`.

    Input columns are the resource's fields as text (absent ones are added as null).
    """
    present_columns = set(frame.collect_schema().names())
    expected = [*resource.field_names, INVALID_TYPE]
    missing = [pl.lit(None, pl.String).alias(n) for n in expected if n not in present_columns]
    frame = frame.with_columns(missing) if missing else frame
    raws = [pl.col(f.name).alias(f.name + RAW_SUFFIX) for f in resource.fields]
    typed = []
    for f in resource.fields:
        text = pl.col(f.name + RAW_SUFFIX)
        if f.kind == "text":
            typed.append(pl.when(present(f.name)).then(text).alias(f.name))
        else:
            typed.append(_PARSERS[f.kind](text).cast(POLARS_TYPES[f.kind]).alias(f.name))
    return frame.with_columns(raws).with_columns(typed)


def flag_rules(resource: Resource, context: RuleContext, coerced: pl.LazyFrame) -> pl.LazyFrame:
    """Add one boolean column per rule (True = violated) and `_ok` (no rule violated)."""
    rules = resource.all_rules()
    flags = [_violated(rule, context).alias(_flag(i)) for i, rule in enumerate(rules)]
    return coerced.with_columns(flags).with_columns(
        (~pl.any_horizontal([pl.col(_flag(i)) for i in range(len(rules))])).alias(OK)
    )


def _violated(rule: Rule, context: RuleContext) -> pl.Expr:
    """The rule's flag; a field holding an object or an array breaks only `invalid_type`."""
    violated = rule.violated(context).fill_null(False)
    return violated if rule.id == "invalid_type" else violated & ~not_scalar(rule.field)


def rule_rejects(resource: Resource, context: RuleContext, flagged: pl.DataFrame) -> pl.DataFrame:
    """One reject entry per violated rule per row: every failing rule is reported."""
    parts = []
    for i, rule in enumerate(resource.all_rules()):
        if not flagged.get_column(_flag(i)).any():
            continue  # the common case: filtering every column only to find nothing is costly
        hits = flagged.filter(pl.col(_flag(i)))
        parts.append(reject_entries(hits, resource, field=rule.field, rule=rule.id, message=rule.describe(context)))
    return pl.concat(parts) if parts else empty_rejects()


def reject_entries(
    rows: pl.DataFrame, resource: Resource, *, field: str, rule: str, message: str | pl.Expr
) -> pl.DataFrame:
    """Reject entries for `rows` (which carry `_line`, the raw field columns and maybe `_raw`).

    `message` is one text for all rows, or an expression over `rows` for a message per row."""
    value_column = field + RAW_SUFFIX
    value = pl.col(value_column) if value_column in rows.columns else pl.lit(None, pl.String)
    return rows.select(
        pl.col(LINE).cast(pl.Int64).alias("line"),
        pl.lit(field).alias("field"),
        pl.lit(rule).alias("rule"),
        (pl.lit(message) if isinstance(message, str) else message).alias("message"),
        excerpt(value.cast(pl.String), VALUE_EXCERPT).alias("value"),
        excerpt(raw_record(rows, resource), RAW_EXCERPT).alias("raw"),
    )


def excerpt(text: pl.Expr, limit: int) -> pl.Expr:
    """`text` as a report can hold it: NUL written as `\\u0000`, cut after `limit` characters."""
    safe = text.str.replace_all("\x00", "\\u0000", literal=True)
    return pl.when(safe.str.len_chars() > limit).then(safe.str.slice(0, limit) + "…").otherwise(safe)


def raw_record(rows: pl.DataFrame, resource: Resource) -> pl.Expr:
    """The record as read: the source line for NDJSON, else the fields as a JSON object."""
    columns = [pl.col(f.name + RAW_SUFFIX).alias(f.name) for f in resource.fields if f.name + RAW_SUFFIX in rows.columns]
    fields = pl.struct(columns).struct.json_encode() if columns else pl.lit(None, pl.String)
    return pl.coalesce(pl.col(RAW_RECORD), fields) if RAW_RECORD in rows.columns else fields


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_COLUMNS)


def _flag(index: int) -> str:
    return f"_rule_{index}"


PARTS = 16
"""Hashes are kept in this many parts by their top bits, so that merging the runs of one
part never copies more than a sixteenth of the keys at once."""
_PART_BITS = 4
_PART_STARTS = np.arange(PARTS, dtype=np.uint64) << np.uint64(64 - _PART_BITS)


@dataclass
class SeenKeys:
    """Keys of rows already accepted earlier in the same file, across chunk boundaries.

    Keys are kept as 64-bit hashes (8 bytes a key); the state is rebuilt from the file on
    every run, so hashes only need to agree within one process. A key's hashes are split
    by their top bits into PARTS parts, each a list of sorted runs merged like a binary
    counter (a run at most twice the size of the next absorbs it): at most log2(keys) runs
    a part, each more than twice the next. A chunk's lookup is a binary search in each run,
    its cost O(chunk x log(keys)) whatever the rows already read; each hash is merged
    O(log(keys)) times; and a merge copies at most one part's hashes, so the state's peak
    stays close to its 8 bytes a key.
    """

    runs: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)

    def seen_before(self, key: str, values: pl.Series) -> pl.Series:
        """True where a value's key was accepted in an earlier chunk."""
        present = values.is_not_null()
        parts = self.runs.get(key)
        if parts is None or not present.any():
            return pl.Series(values.name, [False] * len(values), dtype=pl.Boolean)
        hashed = values.hash(seed=0).to_numpy()
        order = np.argsort(hashed)
        needles = hashed[order]  # sorted: each part's needles are one slice, each run's searches walk it in order
        found = np.zeros(len(needles), dtype=bool)
        bounds = np.searchsorted(needles, _PART_STARTS).tolist() + [len(needles)]
        for runs, start, stop in zip(parts, bounds, bounds[1:]):
            part = needles[start:stop]
            for run in runs:
                at = np.searchsorted(run, part).clip(max=len(run) - 1)
                found[start:stop] |= run[at] == part
        seen = np.empty_like(found)
        seen[order] = found
        return pl.Series(values.name, seen) & present

    def add(self, key: str, values: pl.Series) -> None:
        new = np.sort(values.drop_nulls().hash(seed=0).to_numpy())
        parts = self.runs.setdefault(key, [[] for _ in range(PARTS)])
        bounds = np.searchsorted(new, _PART_STARTS).tolist() + [len(new)]
        for runs, start, stop in zip(parts, bounds, bounds[1:]):
            if stop > start:
                _push(runs, new[start:stop].copy())


def _push(runs: list[np.ndarray], run: np.ndarray) -> None:
    runs.append(run)
    while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
        last, before = runs.pop(), runs.pop()
        merged = np.concatenate([before, last])
        merged.sort(kind="stable")  # in place; two sorted runs back to back: timsort merges them in one pass
        runs.append(merged)



@dataclass(frozen=True)
class DatabaseFacts:
    """What the database says about a chunk's candidate rows (see `tasks/checks.py`)."""

    missing_references: pl.DataFrame
    """(line, field, rule, message) of rows whose referenced row does not exist."""
    keys: pl.DataFrame
    """`_line`, KEY, RESOLVED_ID, HOLDER for the rows where any of them matters."""
    recorded_rejects: pl.Series | None = None
    """For a chunk an earlier run committed: the lines it rejected (its decision stands)."""
    ids_exist: bool = False
    """Whether the table holds any of the candidates' given ids already."""


def no_facts() -> DatabaseFacts:
    """Facts of an empty database (pure tests, and rows with nothing to look up)."""
    return DatabaseFacts(
        missing_references=pl.DataFrame(schema={"line": pl.Int64, "field": pl.String, "rule": pl.String, "message": pl.String}),
        keys=pl.DataFrame(schema={LINE: pl.Int64, KEY: pl.String, RESOLVED_ID: pl.String, HOLDER: pl.String}),
    )


@dataclass(frozen=True)
class RecordCheck:
    """A chunk after the record rules: flagged rows, and the rejects of unreadable records
    and failing rules. Pure; comes before the database checks and the key decision."""

    index: int
    rows_read: int
    flagged: pl.DataFrame
    rejects: pl.DataFrame
    source: pl.DataFrame
    """The chunk's readable records as text, to report rows refused later on."""

    def candidates(self, resource: Resource) -> pl.DataFrame:
        """Typed rows that pass the rules, with `_line` and `_key` (the polars-normalized
        natural key): what the database checks look at."""
        nk = resource.natural_key
        key = nk.normalize(pl.col(nk.field)) if nk else pl.lit(None, pl.String)
        return self.flagged.filter(pl.col(OK)).select(LINE, *resource.field_names, key.alias(KEY))


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


def line_rejects(
    source: pl.DataFrame, resource: Resource, lines: pl.Series, *, field: str, rule: str, message: str
) -> pl.DataFrame:
    """Reject entries for the records of `source` (text, as read) on the given lines."""
    rows = source.filter(pl.col(LINE).is_in(lines.implode()))
    return reject_entries(as_raw(rows, resource), resource, field=field, rule=rule, message=message)


def as_raw(rows: pl.DataFrame, resource: Resource) -> pl.DataFrame:
    """Text records with their fields named as `reject_entries` reads them."""
    return rows.rename({c: c + RAW_SUFFIX for c in resource.field_names if c in rows.columns})


def check_records(resource: Resource, context: RuleContext, index: int, chunk: pl.DataFrame) -> RecordCheck:
    """Validate one chunk of raw text rows against every record rule (all failures kept)."""
    readable, unreadable = split_unreadable(chunk)
    flagged = flag_rules(resource, context, coerce(resource, readable.lazy())).collect()
    rejects = pl.concat([unreadable_rejects(resource, unreadable), rule_rejects(resource, context, flagged)])
    return RecordCheck(index, chunk.height, flagged, rejects, readable)


def dedupe_keys(resource: Resource) -> list[tuple[str, str, pl.Expr]]:
    """The in-file unique keys: (field, rule id, key expression over a decided chunk)."""
    keys = [("id", "duplicate_id", pl.col("id"))]
    nk = resource.natural_key
    if nk is not None:
        keys.append((nk.field, f"duplicate_{nk.field}", pl.col(KEY)))
    return keys


def decide(resource: Resource, check: RecordCheck, facts: DatabaseFacts, seen: SeenKeys) -> CheckedChunk:
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
    return apply_decision(resource, check, decide_keys(resource, chunk_keys(resource, check, facts), seen))


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
        LINE, "id", GIVEN_ID, KEY, HOLDER,
        (~pl.col(LINE).is_in(facts.missing_references["line"].implode())).alias(OK),
        (pl.col(LINE).is_in(recorded.implode()) if recorded is not None else pl.lit(False)).alias(RECORDED),
    )
    return ChunkKeys(candidates, facts.missing_references, facts.ids_exist)


def decide_keys(resource: Resource, keys: ChunkKeys, seen: SeenKeys) -> KeyDecision:
    """Which candidates win their keys, given the keys accepted earlier in the file (`seen`,
    which the winners join). Chunks must come here in file order."""
    rows = keys.candidates
    rows = rows.with_columns(_taken(resource, rows, pl.col(OK), seen))
    # a chunk committed earlier: its rejects are in the ledger and its decision stands
    rows = rows.with_columns((pl.col(OK) & ~pl.col(TAKEN) & ~pl.col(RECORDED)).alias(OK))
    marked = mark_duplicates(resource, rows, seen)
    dup_columns = [duplicate_flag(name) for name, _, _ in dedupe_keys(resource)]
    return KeyDecision(
        outcome=marked.select(LINE, "id", GIVEN_ID, HOLDER, TAKEN, *dup_columns, pl.col(OK).alias(ACCEPTED)),
        missing_references=keys.missing_references,
        released_holders=_released_holders(rows, seen),
        # An id-less row may resolve to the id of the row holding its key: not known as new.
        all_new=not keys.ids_exist and marked.filter(pl.col(OK) & pl.col(GIVEN_ID).is_null()).is_empty(),
    )


def apply_decision(resource: Resource, check: RecordCheck, decision: KeyDecision) -> CheckedChunk:
    """The chunk's rows to load and its rejects, by the record rules and `decision`."""
    marked = check.flagged.drop("id").join(decision.outcome, on=LINE, how="left", maintain_order="left")
    rejects = pl.concat([
        check.rejects, _reference_rejects(resource, check.source, decision.missing_references),
        _taken_rejects(resource, marked), duplicate_rejects(resource, marked),
    ])
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
    if resource.natural_key is None:
        return pl.Series(TAKEN, [False] * rows.height, dtype=pl.Boolean)
    hit = (pl.col(GIVEN_ID).is_not_null() & pl.col(HOLDER).is_not_null()).fill_null(False)
    earlier = (
        rows.filter(passed & ~hit).group_by("id").agg(pl.col(LINE).min().alias("_holder_line"))
        .rename({"id": HOLDER})
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
    return pl.concat([
        line_rejects(source, resource, group["line"], field=str(field_name), rule=str(rule), message=str(message))
        for (field_name, rule, message), group in groups
    ])


def _taken_rejects(resource: Resource, marked: pl.DataFrame) -> pl.DataFrame:
    nk = resource.natural_key
    if nk is None or not marked.get_column(TAKEN).any():
        return empty_rejects()
    hits = marked.filter(pl.col(TAKEN))
    message = pl.concat_str(pl.lit(f"{nk.field} is already used by another {resource.name[:-1]} (id "), HOLDER, pl.lit(")"))
    return reject_entries(hits, resource, field=nk.field, rule=nk.taken_rule, message=message)


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


def split_unreadable(chunk: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(readable rows, unreadable rows): readers mark the records they could not read."""
    if READ_RULE not in chunk.columns:
        return chunk, chunk.clear()
    readable = chunk.filter(pl.col(READ_RULE).is_null()).drop(READ_RULE, READ_MESSAGE)
    return readable, chunk.filter(pl.col(READ_RULE).is_not_null())


def unreadable_rejects(resource: Resource, unreadable: pl.DataFrame) -> pl.DataFrame:
    if unreadable.height == 0:
        return empty_rejects()
    parts = []
    for (rule,), group in unreadable.group_by([READ_RULE], maintain_order=True):
        message = pl.col(READ_MESSAGE)
        parts.append(reject_entries(group, resource, field=RAW_RECORD, rule=str(rule), message=message))
    return pl.concat(parts)


def read_value(resource: Resource, context: RuleContext, name: str, text: str) -> tuple[object, list[str]]:
    """One field's text read as an import reads it: (typed value or None, messages of the
    field's rules it breaks). Used to check filter values."""
    frame = pl.DataFrame({name: [text]}, schema={name: pl.String})
    flagged = flag_rules(resource, context, coerce(resource, frame.lazy())).collect()
    problems = [
        rule.describe(context)
        for i, rule in enumerate(resource.all_rules())
        if rule.field == name and flagged.get_column(_flag(i)).item()
    ]
    return flagged.get_column(name).item(), problems


def check_chunk(
    resource: Resource,
    context: RuleContext,
    index: int,
    chunk: pl.DataFrame,
    seen: SeenKeys,
    facts: DatabaseFacts | None = None,
) -> CheckedChunk:
    """Record rules, then the key decision given what the database says (default: nothing
    in the database). The flow runs the two steps apart, with the database checks between."""
    return decide(resource, check_records(resource, context, index, chunk), facts or no_facts(), seen)
