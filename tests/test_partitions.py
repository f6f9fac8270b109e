"""Partitioned Parquet datasets, without a database: what `--partition-by` accepts, the
SQL that orders rows by partition, and the Hive-style files a reader gets back whole."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkflow.errors import ParameterError
from decisions import sql
from decisions.exports import plan_export, refuse_one_stream
from decisions.partitions import NO_VALUE, Partitioning, read_partitioning, refuse_unwieldy
from files import writers
from files.writers import dataset_digest, write_partitioned
from schemas import get_resource
from schemas.resource import RuleContext

CONTEXT = RuleContext(allowed_roles=("admin",))
USERS = get_resource("users")
ARTICLES = get_resource("articles")
USERS_FRAME = pl.DataFrame(
    {
        "id": [f"u{i}" for i in range(6)],
        "email": [f"u{i}@example.com" for i in range(6)],
        "name": ["Ann", None, "Cy", "Di", "Ed", "Flo"],
        "role": ["admin"] * 6,
        "active": [True, False, True, None, True, False],
        "created_at": [
            datetime(2024, 5, 1, 0, 0, tzinfo=UTC),
            datetime(2024, 5, 1, 23, 59, tzinfo=UTC),
            datetime(2024, 5, 2, 0, 0, tzinfo=UTC),
            None,
            datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
            datetime(2023, 12, 31, 23, 0, tzinfo=UTC),
        ],
        "updated_at": [None] * 6,
    },
    schema=USERS.polars_schema(),
)


def plan(resource: str, partition_by: str, format: str = "parquet") -> object:
    return plan_export(resource, format, context=CONTEXT, partition_by=partition_by)


@pytest.mark.parametrize(
    ("text", "partitioning", "key"),
    [
        ("created_at:day", Partitioning("created_at", "day"), "created_at_day"),
        ("updated_at:month", Partitioning("updated_at", "month"), "updated_at_month"),
        (" created_at:year ", Partitioning("created_at", "year"), "created_at_year"),
        ("role", Partitioning("role"), "role"),
        ("active", Partitioning("active"), "active"),
    ],
)
def test_a_partition_is_a_timestamp_s_grain_or_a_column(text: str, partitioning: Partitioning, key: str) -> None:
    read = read_partitioning(text, USERS, "parquet")
    assert read == partitioning and read.key == key and read.spec == text.strip()


@pytest.mark.parametrize(
    ("resource", "text", "format", "says"),
    [
        ("users", "role", "csv", "use --format parquet, not csv"),
        ("users", "nope", "parquet", "choose from id, email"),
        ("users", "created_at", "parquet", "write created_at:day"),
        ("users", "created_at:week", "parquet", "write created_at:day"),
        ("users", "role:day", "parquet", "role is not a timestamp"),
        ("users", "id", "parquet", "its values are unique"),
        ("articles", "tags", "parquet", "its values are lists"),
    ],
)
def test_a_partition_that_cannot_be_written_is_refused_with_what_to_write(
    resource: str, text: str, format: str, says: str
) -> None:
    with pytest.raises(ParameterError, match=says):
        plan(resource, text, format)


def test_a_dataset_is_never_streamed_to_one_place() -> None:
    with pytest.raises(ParameterError, match="writes a directory of files"):
        refuse_one_stream(plan("users", "role"))  # type: ignore[arg-type]


def test_too_many_partitions_or_too_long_values_are_refused() -> None:
    role = Partitioning("role")
    refuse_unwieldy(role, 10_000, 80)
    with pytest.raises(ParameterError, match="10,001 directories"):
        refuse_unwieldy(role, 10_001, 1)
    with pytest.raises(ParameterError, match="run to 81 bytes"):
        refuse_unwieldy(role, 1, 81)


def test_directory_names_escape_values_and_name_the_missing_one_as_hive_does() -> None:
    role = Partitioning("role")
    assert role.part("admin", 0) == "role=admin/part-0000.parquet"
    assert role.directory("a/b=c %") == "role=a%2Fb%3Dc%20%25"
    assert role.directory(None) == f"role={NO_VALUE}"
    assert Partitioning("created_at", "day").part("2024-05-01", 12) == "created_at_day=2024-05-01/part-0012.parquet"


def test_the_rows_come_ordered_by_partition_value_then_id() -> None:
    value = sql.partition_value_sql("created_at", "month")
    assert value == "to_char(\"created_at\" AT TIME ZONE 'UTC', 'YYYY-MM')"
    assert sql.partition_value_sql("role", None) == '"role"::text'
    text = sql.export_select("users", ["id"], [("role", "=", "bulkflow.filter_1", "text")], None, None, value)
    assert text == (
        f'SELECT "id", {value} AS "_bulkflow_partition" FROM "users" '
        "WHERE \"role\" = current_setting('bulkflow.filter_1')::text "
        'ORDER BY "_bulkflow_partition", "id"'
    )
    limited = sql.export_select("users", ["id"], [], "bulkflow.limit", None, value)
    assert limited == (  # the first rows by id, then ordered by partition
        f'SELECT "id", {value} AS "_bulkflow_partition" FROM (SELECT * FROM "users" ORDER BY "id" '
        'LIMIT current_setting(\'bulkflow.limit\')::bigint) AS "users" ORDER BY "_bulkflow_partition", "id"'
    )
    census = sql.partition_census_sql("users", [], "10:12:11", value)
    assert census.startswith("SELECT count(*), coalesce(max(longest), 0) FROM (SELECT max(octet_length(")
    assert f"GROUP BY {value}) AS partitions" in census and "pg_visible_in_snapshot" in census


def _frames_by_value(frame: pl.DataFrame, partitioning: Partitioning, batch: int) -> list[pl.DataFrame]:
    """`frame` as an export's SELECT gives it: each row's partition value added, ordered by
    it then id, cut in batches of `batch` rows (batches straddle partitions)."""
    if partitioning.grain:
        value = pl.col(partitioning.field).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d")
    else:
        value = pl.col(partitioning.field).cast(pl.String)
    ordered = frame.with_columns(value.alias(sql.PARTITION_COLUMN)).sort(sql.PARTITION_COLUMN, "id", nulls_last=True)
    return [ordered.slice(start, batch) for start in range(0, ordered.height, batch)]


def _opener(root: Path) -> writers.PartOpener:
    def open_part(path: str) -> AbstractContextManager[IO[bytes]]:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        return (root / path).open("wb")

    return open_part


@pytest.mark.parametrize("spec", ["created_at:day", "role", "active"])
def test_a_dataset_read_back_with_hive_partitioning_is_the_rows_written(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writers, "ROWS_PER_FILE", 2)  # partitions of more rows go to several files
    frame = USERS_FRAME.with_columns(
        role=pl.Series(["a/b=c %", "admin", "admin", None, "admin", "reader"][: USERS_FRAME.height])
    )
    request = plan_export("users", "parquet", context=CONTEXT, partition_by=spec)
    partitioning = read_partitioning(spec, USERS, "parquet")
    files = write_partitioned(request, _frames_by_value(frame, partitioning, 3), _opener(tmp_path), digest=True)

    back = pl.scan_parquet(tmp_path, hive_partitioning=True).collect()
    assert back.select(frame.columns).sort("id").equals(frame.sort("id"))
    assert sum(written.rows for _, written in files) == frame.height
    assert all(0 < written.rows <= 2 for _, written in files)
    on_disk = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet"))
    assert sorted(path for path, _ in files) == on_disk
    assert len(set(on_disk)) == len(files)  # each file written once, one open at a time
    for path, written in files:
        assert written.bytes == (tmp_path / path).stat().st_size
        assert pl.read_parquet(tmp_path / path).height == written.rows
    assert len(dataset_digest(files)) == 64


def test_the_dataset_digest_is_the_listing_s_whatever_the_order() -> None:
    a = ("k=a/part-0000.parquet", writers.Written(1, 10, "aa"))
    b = ("k=b/part-0000.parquet", writers.Written(2, 20, "bb"))
    assert dataset_digest([a, b]) == dataset_digest([b, a]) != dataset_digest([a])


def test_an_empty_export_writes_no_file(tmp_path: Path) -> None:
    request = plan_export("users", "parquet", context=CONTEXT, partition_by="role")
    empty = USERS_FRAME.clear().with_columns(pl.lit(None, pl.String).alias(sql.PARTITION_COLUMN))
    assert write_partitioned(request, [empty], _opener(tmp_path)) == []
    assert not list(tmp_path.iterdir())


values = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=20)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(statuses=st.lists(st.none() | values, min_size=1, max_size=6))
def test_any_value_names_a_directory_that_reads_back_as_itself(
    statuses: list[str | None], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("dataset")
    frame = pl.DataFrame(
        {
            "id": [f"a{i}" for i in range(len(statuses))],
            "slug": "s",
            "title": "t",
            "author_id": "u",
            "status": statuses,
        },
        schema_overrides={"status": pl.String},
    ).select(
        pl.col(name).cast(dtype)
        if name in ("id", "slug", "title", "author_id", "status")
        else pl.lit(None, dtype).alias(name)
        for name, dtype in ARTICLES.polars_schema().items()
    )
    request = plan_export("articles", "parquet", context=CONTEXT, partition_by="status")
    write_partitioned(request, _frames_by_value(frame, Partitioning("status"), 2), _opener(root))
    back = pl.scan_parquet(root, hive_partitioning=True).collect()
    assert back.select(frame.columns).sort("id").equals(frame.sort("id"))
    directories = {p.parent.name for p in root.rglob("*.parquet")}
    assert len(directories) == len(set(statuses))
