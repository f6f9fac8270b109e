"""Synthetic partner files: valid rows plus a configurable share of invalid ones.

Deterministic for a given seed. Valid rows reference ids that the generator's own users
and articles files contain (`usr_<n>`, `art_<n>`), so files generated with matching
`--users`/`--articles` counts load together. Each invalid row breaks one rule, cycling
through the resource's kinds of breakage.
"""

from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from decisions.parsers import format_text_list
from files.formats import detect_format
from schemas import get_resource

ID_LESS_EVERY = 97
"""Every 97th user and article is valid but has no id (its id is derived on import)."""


@dataclass(frozen=True)
class GeneratorSpec:
    resource: str
    rows: int
    invalid_share: float = 0.05
    seed: int = 7
    users: int = 1000
    articles: int = 1000
    id_less_rows: bool = True
    """Leave every 97th user and article without an id. Off for files that PostgreSQL's
    own COPY must load too (the benchmark's baseline), where every row needs its key."""


BROKEN_RULE = "_broken_rule"
"""Column of `generate()`: the rule id each invalid row breaks (null for valid rows)."""

# The rule each kind of breakage violates, per resource, in kind order.
BREAKAGES: dict[str, tuple[str, ...]] = {
    "users": ("invalid_email", "duplicate_email", "invalid_role", "invalid_boolean", "invalid_timestamp"),
    "articles": ("invalid_slug", "duplicate_slug", "unknown_author", "draft_has_published_at", "invalid_status"),
    "comments": ("unknown_article", "required", "body_too_long", "missing_id"),
}


def generate(spec: GeneratorSpec) -> pl.DataFrame:
    """The rows of a synthetic file (`tags` as a list column) plus `_broken_rule`.

    Each invalid row breaks exactly one rule, so with references to valid rows only
    (users/articles generated with no invalid share) the expected rejects are exact.
    """
    get_resource(spec.resource)
    kinds = BREAKAGES[spec.resource]
    threshold = int(spec.invalid_share * 1_000_000)
    frame = pl.select(pl.int_range(spec.rows, dtype=pl.Int64).alias("i"))
    frame = frame.with_columns(((pl.col("i").hash(spec.seed) % 1_000_000) < threshold).alias("_invalid"))
    kind = (pl.col("i").hash(spec.seed + 1) % len(kinds)).cast(pl.Int64)
    if kinds[1].startswith("duplicate_"):
        # A duplicate must copy a valid row: after an invalid one, break the next rule instead.
        previous_valid = ~pl.col("_invalid").shift(1, fill_value=True)
        kind = pl.when((kind == 1) & ~previous_valid).then(2).otherwise(kind)
    frame = frame.with_columns(pl.when(pl.col("_invalid")).then(kind).alias("_kind"))
    builder = {"users": _users, "articles": _articles, "comments": _comments}[spec.resource]
    rules = pl.Series(kinds)
    return (
        builder(frame, spec, pl.col("_kind"))
        .with_columns(pl.col("_kind").replace_strict(list(range(len(kinds))), rules, default=None).alias(BROKEN_RULE))
        .drop("i", "_invalid", "_kind")
    )


def expected_rejects(frame: pl.DataFrame) -> dict[str, int]:
    """Rejects by rule that importing `frame` must report (given valid references)."""
    counts = frame.get_column(BROKEN_RULE).drop_nulls().value_counts()
    return dict(zip(counts[BROKEN_RULE].to_list(), counts["count"].to_list()))


def write_file(spec: GeneratorSpec, path: Path) -> None:
    """Write the generated rows in the format (and compression) the name asks for."""
    fmt, compression = detect_format(str(path))
    frame = generate(spec).drop(BROKEN_RULE)
    target = path.with_suffix("") if compression else path
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        frame.with_columns(_tags_as_json(frame)).write_csv(target, line_terminator="\r\n")
    elif fmt == "ndjson":
        frame.write_ndjson(target)
    elif fmt == "json":
        frame.write_json(target)
    else:
        frame.write_parquet(target)
    if compression:
        with open(target, "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        target.unlink()


def _tags_as_json(frame: pl.DataFrame) -> list[pl.Expr]:
    """CSV has no lists: tags are written as a JSON array, which the importer reads back."""
    return [format_text_list(pl.col("tags")).alias("tags")] if "tags" in frame.columns else []


def _referenced(n: pl.Expr, count: int, prefix: str) -> pl.Expr:
    """A valid reference to one of `count` generated ids, never to an id-less row."""
    modulo = (n * 7919) % max(count, 1)
    target = pl.when(modulo % ID_LESS_EVERY == ID_LESS_EVERY - 1).then(modulo - 1).otherwise(modulo)
    return pl.format(prefix + "{}", target)


def _own_id(prefix: str, spec: GeneratorSpec) -> pl.Expr:
    own = pl.format(prefix + "{}", pl.col("i"))
    if not spec.id_less_rows:
        return own
    return pl.when(pl.col("i") % ID_LESS_EVERY != ID_LESS_EVERY - 1).then(own)


def _timestamp(offset: pl.Expr) -> pl.Expr:
    base = pl.datetime(2024, 1, 1, time_zone="UTC")
    return (base + pl.duration(seconds=offset % 31_536_000)).dt.to_string("%Y-%m-%dT%H:%M:%SZ")


def _users(frame: pl.DataFrame, spec: GeneratorSpec, breakage: pl.Expr) -> pl.DataFrame:
    i = pl.col("i")
    email = pl.format("user{}@example.com", i)
    roles = pl.lit(["admin", "author", "editor", "reader"])
    return frame.with_columns(
        _own_id("usr_", spec).alias("id"),
        pl.when(breakage == 0)
        .then(pl.format("user{}@bar", i))  # no dot in the domain
        .when(breakage == 1)
        .then(pl.format("USER{}@example.com", i - 1))  # case-varied duplicate
        .otherwise(email)
        .alias("email"),
        pl.format("User {}", i).alias("name"),
        pl.when(breakage == 2).then(pl.lit("manager")).otherwise(roles.list.get(i % 4)).alias("role"),
        pl.when(breakage == 3).then(pl.lit("yes")).otherwise((i % 3 != 0).cast(pl.String)).alias("active"),
        pl.when(breakage == 4).then(pl.lit("yesterday")).otherwise(_timestamp(i * 37)).alias("created_at"),
        _timestamp(i * 37 + 3600).alias("updated_at"),
    )


def _articles(frame: pl.DataFrame, spec: GeneratorSpec, breakage: pl.Expr) -> pl.DataFrame:
    i = pl.col("i")
    status = (
        pl.when(breakage == 3)
        .then(pl.lit("draft"))
        .otherwise(pl.lit(["draft", "published", "archived"]).list.get(i % 3))
    )
    return frame.with_columns(
        _own_id("art_", spec).alias("id"),
        pl.when(breakage == 0)
        .then(pl.format("Bad Slug {}!", i))
        .when(breakage == 1)
        .then(pl.format("article-{}", i - 1))  # duplicate slug
        .otherwise(pl.format("article-{}", i))
        .alias("slug"),
        pl.format("Article {}", i).alias("title"),
        pl.format('Body of article {} with "quotes", commas\nand a second line.', i).alias("body"),
        pl.when(breakage == 2)
        .then(pl.format("usr_missing_{}", i))
        .otherwise(_referenced(i, spec.users, "usr_"))
        .alias("author_id"),
        pl.concat_list(pl.lit("news"), pl.format("t{}", i % 10)).alias("tags"),
        pl.when((status != "draft") | (breakage == 3)).then(_timestamp(i * 53)).alias("published_at"),
        pl.when(breakage == 4).then(pl.lit("pending")).otherwise(status).alias("status"),
    )


def _comments(frame: pl.DataFrame, spec: GeneratorSpec, breakage: pl.Expr) -> pl.DataFrame:
    i = pl.col("i")
    long_body = pl.lit(" ".join(["word"] * 501))
    return frame.with_columns(
        pl.when(breakage == 3).then(pl.lit(None, pl.String)).otherwise(pl.format("cm_{}", i)).alias("id"),
        pl.when(breakage == 0)
        .then(pl.format("art_missing_{}", i))
        .otherwise(_referenced(i, spec.articles, "art_"))
        .alias("article_id"),
        _referenced(i + 1, spec.users, "usr_").alias("user_id"),
        pl.when(breakage == 1)
        .then(pl.lit("   "))
        .when(breakage == 2)
        .then(long_body)
        .otherwise(pl.format('Comment {} — ünïcödé, "quoted"', i))
        .alias("body"),
        _timestamp(i * 11).alias("created_at"),
    )
