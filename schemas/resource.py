"""The vocabulary every resource definition is written in.

A `Resource` is the one definition of a kind of record: its fields and their types, its
validation rules with stable rule ids, its natural key and foreign keys. Validation, the
load SQL, the DDL and the frame contracts (`schemas/frames.py`) are all derived from it, so adding a resource
means adding one file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import polars as pl

if TYPE_CHECKING:  # annotations only: the settings module is the heavier import
    from bulkflow.settings import Settings

FieldKind = Literal["text", "boolean", "timestamp", "text_list"]

PG_TYPES: dict[FieldKind, str] = {
    "text": "text",
    "boolean": "boolean",
    "timestamp": "timestamptz",
    "text_list": "text[]",
}
POLARS_TYPES: dict[FieldKind, pl.DataType] = {
    "text": pl.String(),
    "boolean": pl.Boolean(),
    "timestamp": pl.Datetime("us", "UTC"),
    "text_list": pl.List(pl.String()),
}
# Rule ids raised when a present value cannot be read as its field's type; the message
# names the formats the file was read with (`ValueFormats.words`).
TYPE_RULES: dict[FieldKind, tuple[str, str]] = {
    "boolean": ("invalid_boolean", "must be {booleans}"),
    "timestamp": ("invalid_timestamp", "must be {timestamps}"),
    "text_list": ("invalid_tags", 'must be a JSON array of strings, e.g. ["a","b"]'),
}
RAW_SUFFIX = "__raw"
INVALID_TYPE = "_invalid_type"
"""Column the JSON readers fill with the names of fields holding an object or an array
where a single value is expected (comma-separated; null when there are none)."""
MAX_KEY_BYTES = 1024
"""Longest id, natural key or reference accepted. PostgreSQL cannot index a btree entry of
more than about 2,700 bytes; anything close to that is a data error, not a key."""


def raw(name: str) -> pl.Expr:
    """The field's text as it came in the file (null when absent)."""
    return pl.col(name + RAW_SUFFIX)


def value(name: str) -> pl.Expr:
    """The field's typed value (null when absent or unreadable)."""
    return pl.col(name)


def present(name: str) -> pl.Expr:
    """True when the field has a non-blank value in the file."""
    return raw(name).str.strip_chars().str.len_chars().fill_null(0) > 0


@dataclass(frozen=True)
class ValueFormats:
    """How a file writes values: the texts that mean no value, true and false (any case),
    the strftime patterns of its timestamps (tried in order, before ISO-8601) and the time
    zone of a timestamp without an offset."""

    null_values: tuple[str, ...] = ()
    true_values: tuple[str, ...] = ("true",)
    false_values: tuple[str, ...] = ("false",)
    timestamp_formats: tuple[str, ...] = ()
    timezone: str = "UTC"

    def words(self) -> dict[str, str]:
        """What a value must look like, as the type rules' messages say it."""
        booleans = f"{' or '.join(self.true_values)} (true) or {' or '.join(self.false_values)} (false)"
        iso = "an ISO-8601 timestamp, e.g. 2024-05-01T12:00:00Z"
        shapes = " or ".join(self.timestamp_formats)
        return {
            "booleans": "true or false" if self == ValueFormats(timezone=self.timezone) else booleans,
            "timestamps": f"a timestamp as {shapes} (or {iso})" if shapes else iso,
        }


@dataclass(frozen=True)
class RuleContext:
    """Configuration that rules may depend on (e.g. the allowed roles, the value formats)."""

    allowed_roles: tuple[str, ...]
    values: ValueFormats = ValueFormats()

    @classmethod
    def of(cls, settings: Settings, values: ValueFormats | None = None) -> RuleContext:
        """What the rules read from the settings (and the file's value formats)."""
        return cls(allowed_roles=settings.allowed_roles, values=values or ValueFormats())


@dataclass(frozen=True)
class Field:
    name: str
    kind: FieldKind = "text"
    required: bool = False
    """Required fields must be present and not blank (rule `required`), and their column
    must exist in a file with a header."""


@dataclass(frozen=True)
class Rule:
    """A record rule: `violated` is a polars expression, True on the rows that break it.

    `message` may name configuration as `{allowed_roles}`; `describe` fills it in.
    """

    id: str
    field: str
    message: str
    violated: Callable[[RuleContext], pl.Expr]

    def describe(self, context: RuleContext) -> str:
        return self.message.format(allowed_roles=", ".join(context.allowed_roles), **context.values.words())


FilterOp = Literal["=", ">=", "<"]
FILTER_KEY_SUFFIX: dict[FilterOp, str] = {"=": "", ">=": "_from", "<": "_to"}
"""How a filter key names its operator: `created_at_from` is `created_at >= value`."""


@dataclass(frozen=True)
class FilterSpec:
    """An allowed export filter: `key=value` means `field op value`."""

    key: str
    field: str
    op: FilterOp


@dataclass(frozen=True)
class NaturalKey:
    """A unique business key, indexed by the database as `sql(column)`.

    The database's folding is the truth (its unique index decides what collides): the
    load's checks ask PostgreSQL for `sql(...)` and use it wherever `normalize`, a cheap
    polars approximation, disagrees (e.g. Unicode case pairs such as `İ`).
    """

    field: str
    normalize: Callable[[pl.Expr], pl.Expr]
    sql: Callable[[str], str]
    """The indexed SQL expression over a (quoted) column, e.g. `lower("email")`."""
    taken_rule: str
    """Rule id when the key is already held by another id in the database."""


@dataclass(frozen=True)
class ForeignKey:
    field: str
    references: str
    rule: str


@dataclass(frozen=True)
class Resource:
    name: str
    fields: tuple[Field, ...]
    rules: tuple[Rule, ...] = ()
    natural_key: NaturalKey | None = None
    foreign_keys: tuple[ForeignKey, ...] = ()
    filterable: tuple[str, ...] = ()
    """Fields exports may filter on by equality; timestamps get ranges automatically."""
    extra_ddl: tuple[str, ...] = field(default=())

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def required_columns(self) -> list[str]:
        return [f.name for f in self.fields if f.required]

    @property
    def key_fields(self) -> tuple[str, ...]:
        """Fields the database indexes: the id, the natural key and every reference."""
        names = ["id"]
        if self.natural_key is not None:
            names.append(self.natural_key.field)
        names.extend(fk.field for fk in self.foreign_keys)
        return tuple(names)

    def all_rules(self) -> list[Rule]:
        """Generated rules (required, types, text, key length, missing id), then the
        resource's own."""
        generated: list[Rule] = []
        for f in self.fields:
            if f.required:
                generated.append(Rule("required", f.name, f"{f.name} is required", _missing(f.name)))
            if f.kind != "text_list":
                message = (
                    f"{f.name} must be a text (or a number), not a JSON object, array or boolean"
                    if f.kind == "text"
                    else f"{f.name} must be a single value, not a JSON object or array"
                )
                generated.append(Rule("invalid_type", f.name, message, _not_scalar(f.name)))
            if f.kind in TYPE_RULES:
                rule_id, message = TYPE_RULES[f.kind]
                generated.append(Rule(rule_id, f.name, f"{f.name} {message}", _unreadable(f.name)))
            if f.kind in ("text", "text_list"):
                message = f"{f.name} contains a NUL character (\\u0000), which PostgreSQL text cannot hold"
                generated.append(Rule("invalid_text", f.name, message, _has_nul(f)))
            if f.name in self.key_fields:
                message = f"{f.name} is longer than {MAX_KEY_BYTES} bytes, too long for a key"
                generated.append(Rule("value_too_long", f.name, message, _too_long(f.name)))
        generated.append(self._missing_id_rule())
        return generated + list(self.rules)

    def _missing_id_rule(self) -> Rule:
        if self.natural_key is None:
            message = f"id is required: a {self.name[:-1]} without id cannot be upserted idempotently"
            return Rule("missing_id", "id", message, _missing("id"))
        nk = self.natural_key.field
        message = f"id and {nk} are both missing: the record cannot be upserted idempotently"
        return Rule("missing_id", "id", message, lambda ctx: ~present("id") & ~present(nk))

    def filters(self) -> dict[str, FilterSpec]:
        """Every filter key exports accept: `field` (equality) for the filterable fields;
        `<ts>_from` (>=), `<ts>_to` (<) and `<name>_since` (>=) for timestamps `<name>_at`."""
        specs = {name: FilterSpec(name, name, "=") for name in self.filterable}
        for f in self.fields:
            if f.kind != "timestamp":
                continue
            for op in (">=", "<"):
                key = f.name + FILTER_KEY_SUFFIX[op]
                specs[key] = FilterSpec(key, f.name, op)
            if f.name.endswith("_at"):
                since = f.name.removesuffix("_at") + "_since"
                specs[since] = FilterSpec(since, f.name, ">=")
        return specs

    def kind_of(self, name: str) -> FieldKind:
        return next(f.kind for f in self.fields if f.name == name)

    def polars_schema(self) -> dict[str, pl.DataType]:
        return {f.name: POLARS_TYPES[f.kind] for f in self.fields}

    def ddl(self) -> list[str]:
        """Idempotent DDL: the table, its foreign keys and unique natural key index."""
        columns = []
        for f in self.fields:
            column = f"{f.name} {PG_TYPES[f.kind]}"
            if f.name == "id":
                column += " PRIMARY KEY"
            for fk in self.foreign_keys:
                if fk.field == f.name:
                    column += f" REFERENCES {fk.references} (id)"
            columns.append(column)
        statements = [f"CREATE TABLE IF NOT EXISTS {self.name} ({', '.join(columns)})"]
        if self.natural_key is not None:
            nk = self.natural_key
            statements.append(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {self.name}_{nk.field}_key ON {self.name} (({nk.sql(nk.field)}))"
            )
        for fk in self.foreign_keys:
            statements.append(f"CREATE INDEX IF NOT EXISTS {self.name}_{fk.field}_idx ON {self.name} ({fk.field})")
        return statements + list(self.extra_ddl)


def _missing(name: str) -> Callable[[RuleContext], pl.Expr]:
    return lambda ctx: ~present(name)


def _unreadable(name: str) -> Callable[[RuleContext], pl.Expr]:
    return lambda ctx: present(name) & value(name).is_null()


def _not_scalar(name: str) -> Callable[[RuleContext], pl.Expr]:
    return lambda ctx: not_scalar(name)


def not_scalar(name: str) -> pl.Expr:
    """True where the field holds a JSON object or array (set by the JSON readers)."""
    return pl.col(INVALID_TYPE).str.split(",").list.contains(name).fill_null(False)


def _has_nul(f: Field) -> Callable[[RuleContext], pl.Expr]:
    if f.kind == "text_list":  # JSON escapes (\u0000) are decoded only in the typed list
        return lambda ctx: value(f.name).list.eval(pl.element().str.contains("\x00", literal=True)).list.any()
    return lambda ctx: raw(f.name).str.contains("\x00", literal=True)


def _too_long(name: str) -> Callable[[RuleContext], pl.Expr]:
    return lambda ctx: raw(name).str.len_bytes() > MAX_KEY_BYTES
