"""articles: written by a user. Natural key: slug."""

from __future__ import annotations

import polars as pl

from schemas.resource import Field, ForeignKey, NaturalKey, Resource, Rule, present, raw

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
STATUSES = ("draft", "published", "archived")

ARTICLES = Resource(
    name="articles",
    fields=(
        Field("id"),
        Field("slug", required=True),
        Field("title", required=True),
        Field("body"),
        Field("author_id", required=True),
        Field("tags", "text_list"),
        Field("published_at", "timestamp"),
        Field("status", required=True),
    ),
    rules=(
        Rule(
            "invalid_slug",
            "slug",
            "slug must be kebab-case: lowercase letters and digits joined by single hyphens",
            lambda ctx: present("slug") & ~raw("slug").str.contains(SLUG_PATTERN),
        ),
        Rule(
            "invalid_status",
            "status",
            f"status must be one of {', '.join(STATUSES)}",
            lambda ctx: present("status") & ~pl.col("status").is_in(list(STATUSES)),
        ),
        Rule(
            "draft_has_published_at",
            "published_at",
            "a draft must not have published_at",
            lambda ctx: (pl.col("status") == "draft").fill_null(False) & present("published_at"),
        ),
    ),
    natural_key=NaturalKey(
        field="slug",
        normalize=lambda expr: expr,
        sql=lambda column: column,
        taken_rule="slug_taken",
    ),
    foreign_keys=(ForeignKey("author_id", "users", "unknown_author"),),
    filterable=("id", "status", "author_id"),
)
