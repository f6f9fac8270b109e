"""Timestamps assembled from tables are the CSV text polars writes itself, byte for byte."""

from __future__ import annotations

import io
import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from files.timestamp_text import UTC_TIMESTAMP_FORMAT, utc_timestamp_texts

_EDGES = [
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2024, 2, 29, 12, 0, 0, 500_000, tzinfo=UTC),
    datetime(2024, 7, 21, 14, 5, 16, 1_000, tzinfo=UTC),
    datetime(2024, 7, 21, 14, 5, 16, 123_456, tzinfo=UTC),
    datetime(2024, 7, 21, 14, 5, 16, 120, tzinfo=UTC),
    datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC),
    None,
]


def _frame(moments: list[datetime | None], zone: str = "UTC") -> pl.DataFrame:
    column = pl.Series("at", moments, dtype=pl.Datetime("us", "UTC")).dt.convert_time_zone(zone)
    return pl.DataFrame({"id": range(len(moments)), "at": column})


def _random_moments(start: datetime, days: int, count: int) -> list[datetime]:
    pick = random.Random(11)
    return [start + timedelta(microseconds=pick.randrange(days * 86_400_000_000)) for _ in range(count)]


def _csv_by_polars(frame: pl.DataFrame) -> str:
    naive = frame.with_columns(pl.col("at").dt.convert_time_zone("UTC").dt.replace_time_zone(None))
    return naive.write_csv(datetime_format=UTC_TIMESTAMP_FORMAT)


@pytest.mark.parametrize(
    "moments",
    [
        _EDGES,
        _random_moments(datetime(1950, 1, 1, tzinfo=UTC), 36_500, 5_000),
        [
            m.replace(microsecond=m.microsecond // 1000 * 1000)
            for m in _random_moments(datetime(2020, 1, 1, tzinfo=UTC), 9, 500)
        ],
        [m.replace(microsecond=0) for m in _random_moments(datetime(2020, 1, 1, tzinfo=UTC), 9, 500)],
    ],
    ids=["edges", "a century", "milliseconds", "seconds"],
)
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_the_text_is_what_polars_writes(moments: list[datetime | None], zone: str) -> None:
    frame = _frame(moments, zone)
    texts = utc_timestamp_texts(frame)
    assert texts, "a table covers these days"
    assert frame.with_columns(texts).write_csv() == _csv_by_polars(frame)


_DAY_US = 86_400_000_000


@pytest.mark.parametrize(
    "days",
    [
        [-719_162, 19_723],  # 0001-01-01 and 2024-01-01: too far apart for a table
        [2_932_897],  # 10000-01-01: a year chrono writes with a sign
        [-719_163],  # 1 BC
    ],
)
def test_days_no_table_holds_are_left_to_polars(days: list[int]) -> None:
    moments = pl.from_epoch(pl.Series([d * _DAY_US for d in days] + [None]), time_unit="us").dt.replace_time_zone("UTC")
    assert utc_timestamp_texts(pl.DataFrame({"at": moments})) == []


def test_a_batch_of_null_timestamps_writes_them_empty() -> None:
    frame = _frame([None, None])
    out = io.StringIO()
    frame.with_columns(utc_timestamp_texts(frame)).write_csv(out)
    assert out.getvalue() == "id,at\n0,\n1,\n" == _csv_by_polars(frame)


def test_a_frame_without_timestamps_or_rows_needs_nothing() -> None:
    assert utc_timestamp_texts(pl.DataFrame({"id": [1]})) == []
    assert utc_timestamp_texts(_frame([])) == []
