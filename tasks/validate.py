"""Pure transforms: raw text columns in, typed rows and reject entries out.

Nothing here does I/O; every function takes and returns polars frames, so unit tests hit
them directly. The rules themselves live in `schemas/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from schemas.resource import POLARS_TYPES, RAW_SUFFIX, Resource, RuleContext, present

LINE = "_line"
RAW_RECORD = "_raw"
OK = "_ok"
REJECT_COLUMNS = {
    "line": pl.Int64,
    "field": pl.String,
    "rule": pl.String,
    "message": pl.String,
    "value": pl.String,
    "raw": pl.String,
}
_FAST_TIMESTAMP = "%Y-%m-%dT%H:%M:%S%#z"
_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")
_JSON_STRING_ARRAY = r'^\[\s*(?:"(?:[^"\\]|\\.)*"\s*(?:,\s*"(?:[^"\\]|\\.)*"\s*)*)?\]$'


def parse_boolean(text: pl.Expr) -> pl.Expr:
    """`true`/`false` (any case, surrounding blanks ignored) to Boolean; anything else null."""
    word = text.str.strip_chars().str.to_lowercase()
    return pl.when(word == "true").then(True).when(word == "false").then(False)


def parse_timestamp(text: pl.Expr) -> pl.Expr:
    """ISO-8601 to UTC; an offset-less timestamp or a date is taken as UTC. Unreadable: null."""
    return text.map_batches(_parse_timestamps, return_dtype=pl.Datetime("us", "UTC"))


def _parse_timestamps(text: pl.Series) -> pl.Series:
    # The common shape (seconds and an offset or Z) has a fast parser; only the rows it
    # cannot read go through the slower list of accepted shapes.
    fast = text.str.to_datetime(_FAST_TIMESTAMP, strict=False, time_zone="UTC", time_unit="us")
    leftover = fast.is_null() & text.is_not_null()
    if not leftover.any():
        return fast
    slow = pl.select(_parse_any_timestamp(pl.lit(text.filter(leftover)))).to_series()
    return fast.scatter(leftover.arg_true(), slow)


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
    missing = [pl.lit(None, pl.String).alias(n) for n in resource.field_names if n not in present_columns]
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
    flags = [rule.violated(context).fill_null(False).alias(_flag(i)) for i, rule in enumerate(rules)]
    return coerced.with_columns(flags).with_columns(
        (~pl.any_horizontal([pl.col(_flag(i)) for i in range(len(rules))])).alias(OK)
    )


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
    rows: pl.DataFrame, resource: Resource, *, field: str, rule: str, message: str
) -> pl.DataFrame:
    """Reject entries for `rows` (which carry `_line`, the raw field columns and maybe `_raw`)."""
    value_column = field + RAW_SUFFIX
    value = pl.col(value_column) if value_column in rows.columns else pl.lit(None, pl.String)
    return rows.select(
        pl.col(LINE).cast(pl.Int64).alias("line"),
        pl.lit(field).alias("field"),
        pl.lit(rule).alias("rule"),
        pl.lit(message).alias("message"),
        value.cast(pl.String).alias("value"),
        raw_record(rows, resource).alias("raw"),
    )


def raw_record(rows: pl.DataFrame, resource: Resource) -> pl.Expr:
    """The record as read: the source line for NDJSON, else the fields as a JSON object."""
    if RAW_RECORD in rows.columns:
        return pl.col(RAW_RECORD)
    columns = [pl.col(f.name + RAW_SUFFIX).alias(f.name) for f in resource.fields if f.name + RAW_SUFFIX in rows.columns]
    return pl.struct(columns).struct.json_encode()


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_COLUMNS)


def _flag(index: int) -> str:
    return f"_rule_{index}"


@dataclass
class SeenKeys:
    """Keys of rows already accepted earlier in the same file, across chunk boundaries.

    Keys are kept as 64-bit hashes so memory stays small (8 bytes a key); the state is
    rebuilt from the file on every run, so hashes only need to agree within one process.
    """

    hashes: dict[str, pl.Series] = field(default_factory=dict)

    def seen_before(self, key: str, values: pl.Series) -> pl.Series:
        """True where a value's key was accepted in an earlier chunk."""
        hashed = values.hash(seed=0)
        seen = self.hashes.get(key)
        if seen is None or seen.is_empty():
            return pl.Series(values.name, [False] * len(values), dtype=pl.Boolean)
        # Scan the large set once for the few keys of this chunk (hash the small side):
        # the cost per chunk stays linear in the set, with no set rebuilt per chunk.
        hits = seen.filter(seen.is_in(hashed.drop_nulls().implode()))
        return hashed.is_in(hits.implode()) & values.is_not_null()

    def add(self, key: str, values: pl.Series) -> None:
        new = values.drop_nulls().hash(seed=0)
        old = self.hashes.get(key)
        self.hashes[key] = new if old is None else pl.concat([old, new], rechunk=False)


def dedupe_keys(resource: Resource) -> list[tuple[str, str, pl.Expr]]:
    """The in-file unique keys: (field, rule id, normalized key expression)."""
    keys = [("id", "duplicate_id", pl.col("id"))]
    nk = resource.natural_key
    if nk is not None:
        keys.append((nk.field, f"duplicate_{nk.field}", nk.normalize(pl.col(nk.field))))
    return keys


def mark_duplicates(resource: Resource, flagged: pl.DataFrame, seen: SeenKeys) -> pl.DataFrame:
    """Flag later occurrences of a key among rows that pass the rules.

    The first valid occurrence wins (earlier chunks first, via `seen`); later ones get one
    `_dup_<field>` flag per duplicated key and lose `_ok`. The winners' keys join `seen`.
    """
    flags, valid_keys = [], {}
    for name, _, key in dedupe_keys(resource):
        # Rows failing the rules get a null key, so they never count as an occurrence.
        valid_key = flagged.select(pl.when(pl.col(OK)).then(key)).to_series()
        earlier_in_chunk = ~valid_key.is_first_distinct() & valid_key.is_not_null()
        flags.append((earlier_in_chunk | seen.seen_before(name, valid_key)).alias(f"_dup_{name}"))
        valid_keys[name] = valid_key
    dup_columns = [f"_dup_{name}" for name, _, _ in dedupe_keys(resource)]
    marked = flagged.with_columns(flags)
    marked = marked.with_columns((pl.col(OK) & ~pl.any_horizontal(dup_columns)).alias(OK))
    ok = marked.get_column(OK)
    for name, valid_key in valid_keys.items():
        seen.add(name, valid_key.filter(ok))
    return marked


def duplicate_rejects(resource: Resource, marked: pl.DataFrame) -> pl.DataFrame:
    parts = []
    for name, rule, _ in dedupe_keys(resource):
        if not marked.get_column(f"_dup_{name}").any():
            continue
        hits = marked.filter(pl.col(f"_dup_{name}"))
        message = f"{name} already appears on an earlier line of this file"
        parts.append(reject_entries(hits, resource, field=name, rule=rule, message=message))
    return pl.concat(parts) if parts else empty_rejects()


MALFORMED = "the line is not a JSON object"
IS_OBJECT = "_is_object"


def split_malformed(chunk: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(readable rows, malformed rows): only NDJSON readers mark lines that are not objects."""
    if IS_OBJECT not in chunk.columns:
        return chunk, chunk.clear()
    readable = chunk.filter(pl.col(IS_OBJECT)).drop(IS_OBJECT)
    return readable, chunk.filter(~pl.col(IS_OBJECT)).drop(IS_OBJECT)


def malformed_rejects(resource: Resource, malformed: pl.DataFrame) -> pl.DataFrame:
    if malformed.height == 0:
        return empty_rejects()
    return reject_entries(malformed, resource, field=RAW_RECORD, rule="malformed_record", message=MALFORMED)


@dataclass(frozen=True)
class CheckedChunk:
    """A chunk after record rules and in-file dedupe: rows to load and rejects so far."""

    index: int
    rows_read: int
    rows: pl.DataFrame
    """Typed rows that passed, with `_line`, ready for the database checks and upsert."""
    rejects: pl.DataFrame
    source: pl.DataFrame
    """The chunk's readable records as text, to report rows the database checks refuse."""

    def rejects_for(self, resource: Resource, lines: pl.Series, *, field: str, rule: str, message: str) -> pl.DataFrame:
        """Reject entries for the given lines, with their values and records as read."""
        rows = self.source.filter(pl.col(LINE).is_in(lines.implode()))
        text = rows.rename({c: c + RAW_SUFFIX for c in resource.field_names if c in rows.columns})
        return reject_entries(text, resource, field=field, rule=rule, message=message)


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
    resource: Resource, context: RuleContext, index: int, chunk: pl.DataFrame, seen: SeenKeys
) -> CheckedChunk:
    """Validate one chunk of raw text rows: every failing rule, then in-file duplicates."""
    readable, malformed = split_malformed(chunk)
    flagged = flag_rules(resource, context, coerce(resource, readable.lazy())).collect()
    marked = mark_duplicates(resource, flagged, seen)
    rejects = pl.concat(
        [malformed_rejects(resource, malformed), rule_rejects(resource, context, flagged), duplicate_rejects(resource, marked)]
    )
    rows = marked.filter(pl.col(OK)).select(LINE, *resource.field_names)
    return CheckedChunk(index=index, rows_read=chunk.height, rows=rows, rejects=rejects, source=readable)
