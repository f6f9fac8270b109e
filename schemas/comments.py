"""comments: a user's comment on an article. No natural key: an id is required."""

from __future__ import annotations

import polars as pl

from schemas.resource import Field, ForeignKey, Resource, Rule, present

MAX_BODY_WORDS = 500

COMMENTS = Resource(
    name="comments",
    fields=(
        Field("id"),
        Field("article_id", required=True),
        Field("user_id", required=True),
        Field("body", required=True),
        Field("created_at", "timestamp"),
    ),
    rules=(
        Rule(
            "body_too_long",
            "body",
            f"body must have at most {MAX_BODY_WORDS} words",
            lambda ctx: present("body") & (pl.col("body").str.count_matches(r"\S+") > MAX_BODY_WORDS),
        ),
    ),
    foreign_keys=(
        ForeignKey("article_id", "articles", "unknown_article"),
        ForeignKey("user_id", "users", "unknown_user"),
    ),
    filterable=("id", "article_id", "user_id"),
)
