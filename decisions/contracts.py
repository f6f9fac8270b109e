"""The chunk frames checked against their contracts (`schemas/frames.py`).

A breach is a bug upstream, never the file's doing: it is an `InvariantError`, raised
before the frame reaches the database.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from bulkflow.errors import InvariantError, first_line
from schemas.frames import LoadRows, Rejects, contract
from schemas.resource import Resource


def check_load(resource: Resource, rows: pl.DataFrame, rejects: pl.DataFrame) -> None:
    """Refuse a chunk whose load frame or rejects break their contract (a bug upstream:
    the decision should never let such a frame through), before any SQL runs."""
    check(contract(LoadRows, resource), rows)
    check(contract(Rejects, resource), rejects)


def check(schema: pa.DataFrameSchema, frame: pl.DataFrame) -> None:
    """Validate `frame` eagerly, every check on every row; a breach is an `InvariantError`
    naming the frame and what broke."""
    try:
        schema.validate(frame, lazy=True)
    except (SchemaError, SchemaErrors) as error:
        raise InvariantError(f"the {schema.name} frame breaks its contract: {_summary(error)}") from error


def _summary(error: SchemaError | SchemaErrors) -> str:
    if isinstance(error, SchemaError):
        return first_line(error)
    failures = [
        f"{entry.get('column')}: {entry.get('check')}"
        for kinds in error.message.values()
        for entries in kinds.values()
        for entry in entries
    ]
    return "; ".join(failures)
