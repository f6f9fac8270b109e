"""Partitioned Parquet datasets: how `--partition-by` is read, and where each row's file goes.

A dataset is a Hive-style directory: one directory per partition value, named `key=value`
(`created_at_day=2024-05-01`, `role=admin`), holding `part-0000.parquet`, `part-0001...`.
Values are percent-encoded in names (`/`, `=`, `%`... are safe) and a missing value is
`__HIVE_DEFAULT_PARTITION__`, as Hive, Spark, DuckDB and polars read them. A column
partition keeps its column in the files too (polars' default): each file holds whole rows
in their own types, and a reader that takes the value from the path gets the same value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import quote

from bulkflow.errors import ParameterError
from schemas.resource import Resource

Grain = Literal["day", "month", "year"]
GRAINS: tuple[Grain, ...] = get_args(Grain)

PARTITION_BY_HELP = "a Parquet dataset, a folder per value: created_at:day (or :month, :year), or a column (role)"
"""What `--partition-by` (and every `partition_by`) takes."""

NO_VALUE = "__HIVE_DEFAULT_PARTITION__"
"""The directory of the rows without a value (Hive's name for it)."""

MAX_PARTITIONS = 10_000
"""The most directories one export writes: more is a mistake (a partition by a near-unique
column), refused before a file is written."""

MAX_VALUE_BYTES = 80
"""The longest partition value: percent-encoded, it must fit a file name (255 bytes)."""

ROWS_PER_FILE = 1_000_000
"""A partition's rows go to a new part file after this many (files a reader can split
and fetch in parallel)."""


@dataclass(frozen=True)
class Partitioning:
    """Rows grouped by a field's values, or a timestamp's UTC day, month or year."""

    field: str
    grain: Grain | None = None
    """None: the field's own values (a text or boolean field)."""

    @property
    def key(self) -> str:
        """The directories' key: the field, with its grain (`created_at_day`)."""
        return f"{self.field}_{self.grain}" if self.grain else self.field

    @property
    def spec(self) -> str:
        """As the user writes it: `created_at:day`, `role`."""
        return f"{self.field}:{self.grain}" if self.grain else self.field

    def directory(self, value: str | None) -> str:
        """The directory of the rows whose partition value is `value` (text, None: none)."""
        return f"{self.key}={NO_VALUE if value is None else quote(value, safe='')}"

    def part(self, value: str | None, index: int) -> str:
        """The path of a partition's `index`-th file, relative to the dataset."""
        return f"{self.directory(value)}/part-{index:04d}.parquet"


def read_partitioning(text: str, resource: Resource, format: str) -> Partitioning:
    """`--partition-by` checked against the resource: `FIELD:day|month|year` for a
    timestamp, `FIELD` for a text or boolean field; only Parquet exports are partitioned."""
    if format != "parquet":
        raise ParameterError(f"a partitioned export is a Parquet dataset: use --format parquet, not {format}")
    name, colon, grain = text.strip().partition(":")
    if name not in resource.field_names:
        raise ParameterError(
            f"cannot partition {resource.name} by {name!r}: choose from {', '.join(resource.field_names)}"
        )
    kind = resource.kind_of(name)
    if kind == "timestamp":
        if grain not in GRAINS:
            raise ParameterError(
                f"partition by a timestamp's {', '.join(GRAINS[:-1])} or {GRAINS[-1]}: write {name}:day, not {text!r}"
            )
        return Partitioning(name, grain)
    if colon:
        raise ParameterError(f"{name} is not a timestamp: partition by its values ({name}), without :{grain}")
    if kind not in ("text", "boolean") or name == "id":
        raise ParameterError(f"cannot partition by {name}: its values are {'unique' if name == 'id' else 'lists'}")
    return Partitioning(name)


def refuse_unwieldy(partitioning: Partitioning, partitions: int, longest_value: int) -> None:
    """Refuse, before any file is written, a dataset of too many directories or of values too
    long to name one."""
    if partitions > MAX_PARTITIONS:
        raise ParameterError(
            f"partitioning by {partitioning.spec} makes {partitions:,} directories, more than {MAX_PARTITIONS:,}: "
            "choose a coarser partition (a month, a column of fewer values)"
        )
    if longest_value > MAX_VALUE_BYTES:
        raise ParameterError(
            f"values of {partitioning.field} run to {longest_value} bytes, too long to name directories "
            f"(at most {MAX_VALUE_BYTES}): choose another partition"
        )
