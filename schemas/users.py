"""users: people who write articles and comments. Natural key: email, case-insensitive."""

from __future__ import annotations

import polars as pl

from schemas.resource import Field, NaturalKey, Resource, Rule, present, raw

# Deliberately simple: one @, no blanks, a dot in the domain (so `foo@bar` is refused).
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"

USERS = Resource(
    name="users",
    fields=(
        Field("id"),
        Field("email", required=True),
        Field("name"),
        Field("role", required=True),
        Field("active", "boolean"),
        Field("created_at", "timestamp"),
        Field("updated_at", "timestamp"),
    ),
    rules=(
        Rule(
            "invalid_email",
            "email",
            "email must look like name@example.com",
            lambda ctx: present("email") & ~raw("email").str.contains(EMAIL_PATTERN),
        ),
        Rule(
            "invalid_role",
            "role",
            "role must be one of {allowed_roles}",
            lambda ctx: present("role") & ~pl.col("role").is_in(list(ctx.allowed_roles)),
        ),
    ),
    natural_key=NaturalKey(
        field="email",
        normalize=lambda expr: expr.str.to_lowercase(),
        sql=lambda column: f"lower({column})",
        taken_rule="email_taken",
    ),
    filterable=("id", "role", "active"),
)
