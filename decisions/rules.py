"""The record rules applied to a chunk: text rows in (`RowsRead`), flagged typed rows
(`Flagged`) and reject entries (`Rejects`) out.

Pure: no I/O, no database. The rules themselves are declared in `schemas/`.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from decisions.parsers import PARSERS
from schemas.columns import KEY, LINE, OK, RAW_RECORD, READ_MESSAGE, READ_RULE, REJECT_COLUMNS
from schemas.resource import (
    INVALID_TYPE,
    POLARS_TYPES,
    RAW_SUFFIX,
    Resource,
    Rule,
    RuleContext,
    ValueFormats,
    not_scalar,
    present,
)

VALUE_EXCERPT = 1000


RAW_EXCERPT = 10_000
"""Reject entries quote a value or a record up to this many characters (then `…`)."""


def coerce(resource: Resource, frame: pl.LazyFrame, values: ValueFormats = ValueFormats()) -> pl.LazyFrame:
    """Add typed columns for every field, keeping the text under `<field>__raw`, read with
    the file's value formats (a null text is no value at all: the field is absent).

    Input columns are the resource's fields as text (absent ones are added as null).
    """
    present_columns = set(frame.collect_schema().names())
    expected = [*resource.field_names, INVALID_TYPE]
    missing = [pl.lit(None, pl.String).alias(n) for n in expected if n not in present_columns]
    frame = frame.with_columns(missing) if missing else frame
    nulls = list(values.null_values)
    raws = [
        (pl.when(~pl.col(f.name).is_in(nulls)).then(pl.col(f.name)) if nulls else pl.col(f.name)).alias(
            f.name + RAW_SUFFIX
        )
        for f in resource.fields
    ]
    typed = []
    for f in resource.fields:
        text = pl.col(f.name + RAW_SUFFIX)
        if f.kind == "text":
            typed.append(pl.when(present(f.name)).then(text).alias(f.name))
        else:
            typed.append(PARSERS[f.kind](text, values).cast(POLARS_TYPES[f.kind]).alias(f.name))
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
    columns = [
        pl.col(f.name + RAW_SUFFIX).alias(f.name) for f in resource.fields if f.name + RAW_SUFFIX in rows.columns
    ]
    fields = pl.struct(columns).struct.json_encode() if columns else pl.lit(None, pl.String)
    return pl.coalesce(pl.col(RAW_RECORD), fields) if RAW_RECORD in rows.columns else fields


def empty_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECT_COLUMNS)


def _flag(index: int) -> str:
    return f"_rule_{index}"


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
    flagged = flag_rules(resource, context, coerce(resource, readable.lazy(), context.values)).collect()
    rejects = pl.concat([unreadable_rejects(resource, unreadable), rule_rejects(resource, context, flagged)])
    return RecordCheck(index, chunk.height, flagged, rejects, readable)


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
