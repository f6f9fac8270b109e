"""An export request planned and checked: format, fields, filters read by the import's own
rules, a row limit; and the SELECT it runs, its values bound, never in the text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from bulkflow.errors import ParameterError
from decisions.cursors import Cursor
from decisions.partitions import Partitioning, read_partitioning
from decisions.rules import read_value
from decisions.sql import export_select, partition_census_sql, partition_value_sql
from schemas import get_resource
from schemas.parameters import FORMATS, Format, check_format
from schemas.resource import FILTER_KEY_SUFFIX, PG_TYPES, FilterOp, Resource, RuleContext

ExportFormat = Format
"""Exports write every format imports read."""


EXPORT_FORMATS = FORMATS


CONTENT_TYPES: dict[str, str] = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}


_WHERE = re.compile(r"^\s*(\w+)\s*(>=|<|=)\s*(.*)$")


@dataclass(frozen=True)
class Condition:
    field: str
    op: FilterOp
    value: object


@dataclass(frozen=True)
class ExportRequest:
    resource: Resource
    format: ExportFormat
    conditions: tuple[Condition, ...] = ()
    fields: tuple[str, ...] = ()
    filters: dict[str, str] = field(default_factory=dict)
    """The filters as the user gave them (for manifests and logs)."""
    limit: int | None = None
    """The most rows to write (the first ones by id); None: every matching row."""
    since: Cursor | None = None
    """Only the rows changed (and the rows deleted) since this cursor; None: a full export."""
    partitioning: Partitioning | None = None
    """A Parquet dataset of a directory per partition value; None: one file."""

    @property
    def gives_cursor(self) -> bool:
        """Whether the export reads every row it could (no limit), so its snapshot is a cursor
        the next export can start from."""
        return self.limit is None

    @property
    def deletes_apart(self) -> bool:
        """Whether the deletes of this incremental export go to a file of their own (CSV and
        Parquet: a table of other columns), not among the rows as tombstones (NDJSON, JSON)."""
        return self.since is not None and self.format in ("csv", "parquet")


def parse_where(expressions: Sequence[str]) -> dict[str, str]:
    """CLI `--where` expressions (`role=admin`, `created_at>=2024-01-01`) to filter keys."""
    filters: dict[str, str] = {}
    for expression in expressions:
        match = _WHERE.match(expression)
        if not match:
            raise ParameterError(f"cannot read --where {expression!r}: write FIELD=VALUE, FIELD>=VALUE or FIELD<VALUE")
        name, op, value = match.groups()
        filters[name + FILTER_KEY_SUFFIX[cast(FilterOp, op)]] = value
    return filters


def plan_export(
    resource: str,
    format: str = "ndjson",
    filters: Mapping[str, str] | None = None,
    fields: Sequence[str] | None = None,
    *,
    context: RuleContext,
    limit: int | None = None,
    since: str | None = None,
    partition_by: str | None = None,
) -> ExportRequest:
    """Check an export's parameters against the resource's declared filters and fields
    (filter values by the import's own rules, configured by `context`); `limit` caps the
    rows (the first ones by id); `since`, a cursor token, makes it incremental;
    `partition_by` (`created_at:day`, `role`) makes it a partitioned Parquet dataset."""
    definition = get_resource(resource)
    checked_format = check_format(format)
    chosen = tuple(fields) if fields else tuple(definition.field_names)
    unknown = [f for f in chosen if f not in definition.field_names]
    if unknown:
        raise ParameterError(
            f"unknown field(s) {', '.join(unknown)} for {resource}: choose from {', '.join(definition.field_names)}"
        )
    if limit is not None and limit < 0:
        raise ParameterError(f"limit must be 0 or more rows, not {limit}")
    conditions = tuple(_condition(definition, key, value, context) for key, value in (filters or {}).items())
    cursor = Cursor.read(since, resource) if since else None
    partitioning = read_partitioning(partition_by, definition, checked_format) if partition_by else None
    return ExportRequest(
        definition, checked_format, conditions, chosen, dict(filters or {}), limit, cursor, partitioning
    )


def _condition(resource: Resource, key: str, text: str, context: RuleContext) -> Condition:
    spec = resource.filters().get(key)
    if spec is None:
        raise unknown_filter(resource, key)
    parsed, problems = read_value(resource, context, spec.field, text)
    if problems or parsed is None:
        reason = problems[0] if problems else f"{spec.field} needs a value"
        raise ParameterError(f"bad value {text!r} for filter {key}: {reason}")
    return Condition(spec.field, spec.op, parsed)


def unknown_filter(resource: Resource, key: str) -> ParameterError:
    """The refusal of a filter `resource` does not have, naming those it has."""
    return ParameterError(f"unknown filter {key!r} for {resource.name}: allowed are {', '.join(resource.filters())}")


def export_sql(request: ExportRequest) -> tuple[str, dict[str, str]]:
    """The SELECT of an export and its filter values, which travel as bound parameters.

    The values are bound into transaction-local settings (`set_config($1, $2, true)`) and
    read back with a cast: a query without parameters is one ADBC can stream with binary
    COPY, whereas a parameterised one is materialised whole in memory first.
    """
    conditions, values = _bound_conditions(request)
    limit_setting = _bind_limit(request, values)
    sql = export_select(
        request.resource.name, request.fields, conditions, limit_setting, _snapshot(request), _partition_value(request)
    )
    return sql, values


def partition_census(request: ExportRequest) -> tuple[str, dict[str, str]]:
    """The query counting a partitioned export's partitions and measuring its longest value
    (`partition_census_sql`), over the rows the export writes, and its filter values."""
    value = _partition_value(request)
    assert value is not None, "only a partitioned export has partitions"
    conditions, values = _bound_conditions(request)
    limit_setting = _bind_limit(request, values)
    return partition_census_sql(request.resource.name, conditions, _snapshot(request), value, limit_setting), values


def _bound_conditions(request: ExportRequest) -> tuple[list[tuple[str, FilterOp, str, str]], dict[str, str]]:
    """The request's conditions as (field, operator, setting, type), and the settings' values."""
    conditions, values = [], {}
    for i, condition in enumerate(request.conditions, start=1):
        name = f"bulkflow.filter_{i}"
        pg_type = PG_TYPES[request.resource.kind_of(condition.field)]
        conditions.append((condition.field, condition.op, name, pg_type))
        values[name] = _as_text(condition.value)
    return conditions, values


def _bind_limit(request: ExportRequest, values: dict[str, str]) -> str | None:
    """The setting the request's limit is read from (its value added to `values`), if any."""
    if request.limit is None:
        return None
    values["bulkflow.limit"] = str(request.limit)
    return "bulkflow.limit"


def _snapshot(request: ExportRequest) -> str | None:
    return request.since.snapshot if request.since is not None else None


def _partition_value(request: ExportRequest) -> str | None:
    partitioning = request.partitioning
    return partition_value_sql(partitioning.field, partitioning.grain) if partitioning else None


def deletes_location(location: str, format: str) -> str:
    """Where the deletes of an incremental CSV or Parquet export written to `location` go:
    beside it, `.deletes` before its suffix (`users.csv` -> `users.deletes.csv`; a dataset's
    directory `users` -> `users.deletes.parquet`)."""
    head, dot, suffix = location.rpartition(".")
    if not dot or "/" in suffix:
        return f"{location}.deletes.{format}"
    return f"{head}.deletes.{suffix}"


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def refuse_one_stream(request: ExportRequest) -> None:
    """Refuse an export streamed to one place (stdout, an HTTP response) that writes more
    than one file: a partitioned dataset, or an incremental CSV or Parquet export (its
    deletes need a file of their own)."""
    if request.partitioning is not None:
        raise ParameterError(
            "a partitioned export writes a directory of files: export to a directory (-o DIR) or as an export job"
        )
    if request.deletes_apart:
        raise ParameterError(
            f"an incremental {request.format} export writes its deletes to a second file: export to a file "
            "(-o FILE) or as an export job, or choose ndjson or json (deletes as tombstones among the rows)"
        )
