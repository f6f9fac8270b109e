"""Field text to typed values, as an import reads it, and lists back to their CSV text.

Pure polars expressions; exports and the sample generator use them too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import polars as pl

from schemas.resource import ValueFormats

_UTC_TIMESTAMP = "%Y-%m-%dT%H:%M:%SZ"


_FAST_TIMESTAMP = "%Y-%m-%dT%H:%M:%S%#z"


_TIMESTAMP_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")


_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


_JSON_STRING_ARRAY = r'^\[\s*(?:"(?:[^"\\]|\\.)*"\s*(?:,\s*"(?:[^"\\]|\\.)*"\s*)*)?\]$'


YEARS = (1, 9999)
"""Timestamps outside these years are refused: ISO-8601's four-digit years, inside what
PostgreSQL, Arrow and every export format can hold."""


_YEARS_SPAN = (
    datetime(YEARS[0], 1, 1, tzinfo=UTC),
    datetime(YEARS[1], 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
)
"""YEARS as instants: comparing with them compares integers, where taking each value's
year is a calendar computation per value."""


Text = TypeVar("Text", pl.Expr, pl.Series)


def _strptime(text: Text, pattern: str, time_zone: str | None = None) -> Text:
    """`text` read with one strftime pattern, in microseconds; null where it does not fit.
    Without polars's cache of distinct texts: it pays a hash per value to spare a parse,
    and a file's timestamps are mostly distinct (a column of 1M: 0.074 CPU-s with the
    cache, 0.032 without)."""
    return text.str.to_datetime(pattern, strict=False, time_zone=time_zone, time_unit="us", cache=False)


def parse_boolean(text: pl.Expr, values: ValueFormats = ValueFormats()) -> pl.Expr:
    """The true and false texts (any case, surrounding blanks ignored) to Boolean; anything
    else null."""
    word = text.str.strip_chars().str.to_lowercase()
    trues = [w.lower() for w in values.true_values]
    falses = [w.lower() for w in values.false_values]
    return pl.when(word.is_in(trues)).then(True).when(word.is_in(falses)).then(False)


def parse_timestamp(text: pl.Expr, values: ValueFormats = ValueFormats()) -> pl.Expr:
    """The file's timestamp patterns, then ISO-8601, to UTC; a timestamp without an offset
    (or a date) is taken in the file's time zone. Unreadable, a local time that does not
    exist (a daylight-saving gap) or outside YEARS: null."""
    if values.timestamp_formats or values.timezone != "UTC":
        parsed = _parse_formatted(text.str.strip_chars(), values)
    else:
        parsed = text.map_batches(_parse_timestamps, return_dtype=pl.Datetime("us", "UTC"))
    return pl.when(parsed.is_between(*_YEARS_SPAN)).then(parsed)


def _parse_formatted(text: pl.Expr, values: ValueFormats) -> pl.Expr:
    """The patterns in order, then every ISO-8601 shape."""
    iso = text.str.replace(r"[zZ]$", "+00:00").str.replace(" ", "T")
    given = [_read_as(text, pattern, values.timezone) for pattern in values.timestamp_formats]
    shapes = [_read_as(iso, pattern, values.timezone) for pattern in (*_TIMESTAMP_FORMATS, *_NAIVE_FORMATS)]
    return pl.coalesce(*given, *shapes)


def _read_as(text: pl.Expr, pattern: str, timezone: str) -> pl.Expr:
    """`text` read with one strftime pattern, to UTC: a local time (no offset in the
    pattern) in `timezone`, the earlier of two readings when the clock went back."""
    if any(offset in pattern for offset in ("%z", "%:z", "%#z")):
        return _strptime(text, pattern, "UTC")
    local = _strptime(text, pattern)
    return local.dt.replace_time_zone(timezone, ambiguous="earliest", non_existent="null").dt.convert_time_zone("UTC")


def _parse_timestamps(text: pl.Series) -> pl.Series:
    # From the most common shape to the rarest, each parser reading only what the ones
    # before it could not: seconds and Z (a fixed format, three times faster than an offset
    # pattern), seconds and any offset, then the whole list of accepted shapes.
    parsed = _strptime(text, _UTC_TIMESTAMP).dt.replace_time_zone("UTC")
    for parse in (_parse_offset_timestamps, _parse_any_timestamps):
        leftover = parsed.is_null() & text.is_not_null()
        if not leftover.any():
            break
        parsed = parsed.scatter(leftover.arg_true(), parse(text.filter(leftover)))
    return parsed


def _parse_offset_timestamps(text: pl.Series) -> pl.Series:
    return _strptime(text, _FAST_TIMESTAMP, "UTC")


def _parse_any_timestamps(text: pl.Series) -> pl.Series:
    return pl.select(_parse_any_timestamp(pl.lit(text))).to_series()


def _parse_any_timestamp(text: pl.Expr) -> pl.Expr:
    iso = text.str.strip_chars().str.replace(r"[zZ]$", "+00:00").str.replace(" ", "T")
    with_offset = [_strptime(iso, fmt, "UTC") for fmt in _TIMESTAMP_FORMATS]
    naive = [_strptime(iso, fmt).dt.replace_time_zone("UTC") for fmt in _NAIVE_FORMATS]
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


PARSERS: dict[str, Callable[[pl.Expr, ValueFormats], pl.Expr]] = {
    "boolean": parse_boolean,
    "timestamp": parse_timestamp,
    "text_list": lambda text, values: parse_text_list(text),
}
