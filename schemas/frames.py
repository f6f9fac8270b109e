"""The chunk's spine: every frame that crosses a step, declared once as a pandera model.

A chunk goes read -> record rules -> key candidates -> key decision -> load. Each frame
between two steps is one `DataFrameModel` below. The internal column names are the
constants of `schemas/columns.py`, which the models take as aliases, so a class attribute is its
column's name (`Candidates.given_id == GIVEN_ID == "_given_id"`); every step names columns
through them, never as bare text. `contract(model, resource)` adds the resource's own
fields to a model, so one model serves users, articles and comments.

The load boundary checks its frames on every chunk, eagerly and with data-level checks
(`decisions/contracts.py`); the tests check every boundary (`tests/test_frames.py`).
"""

from __future__ import annotations

from functools import cache
from typing import Optional

import pandera.polars as pa
import polars as pl
from pandera.typing.polars import Series

from schemas.columns import (
    ACCEPTED,
    GIVEN_ID,
    HOLDER,
    IN_TABLE,
    KEY,
    LINE,
    OK,
    RAW_RECORD,
    READ_MESSAGE,
    READ_RULE,
    RECORDED,
    REFUSED,
    RESOLVED_ID,
    RULE_ID,
    TAKEN,
)
from schemas.resource import INVALID_TYPE, POLARS_TYPES, Resource


class _Frame(pa.DataFrameModel):
    class Config:
        strict = False  # a frame may carry the resource's fields and a step's own columns


class RowsRead(_Frame):
    """A chunk as the readers give it: one row per record, every field as text."""

    line: Series[pl.Int64] = pa.Field(alias=LINE, unique=True, ge=1)
    """The record's first line in the file (the row number for Parquet)."""
    raw_record: Optional[Series[pl.String]] = pa.Field(alias=RAW_RECORD, nullable=True)
    """The record as read (NDJSON), for reject reports."""
    read_rule: Optional[Series[pl.String]] = pa.Field(alias=READ_RULE, nullable=True)
    """Set on a record the reader could not read (ragged, not a JSON object, too large)."""
    read_message: Optional[Series[pl.String]] = pa.Field(alias=READ_MESSAGE, nullable=True)
    invalid_type: Optional[Series[pl.String]] = pa.Field(alias=INVALID_TYPE, nullable=True)


class Flagged(_Frame):
    """A chunk's readable rows after the record rules: typed fields, their text under
    `<field>__raw`, and whether the row passes every rule."""

    line: Series[pl.Int64] = pa.Field(alias=LINE, unique=True)
    ok: Series[pl.Boolean] = pa.Field(alias=OK)


class KeyFacts(_Frame):
    """What the database says of a candidate's keys, where it matters."""

    line: Series[pl.Int64] = pa.Field(alias=LINE, unique=True)
    key: Series[pl.String] = pa.Field(alias=KEY, nullable=True)
    """The natural key as the database's unique index folds it (null: as polars folds it)."""
    resolved_id: Series[pl.String] = pa.Field(alias=RESOLVED_ID, nullable=True)
    """The id an id-less row takes: its key's holder in the table, or one derived from the key."""
    holder: Series[pl.String] = pa.Field(alias=HOLDER, nullable=True)
    """The other id that holds the row's natural key in the table."""


class Candidates(_Frame):
    """The keys of the rows that pass the record rules, ids resolved: what the in-file key
    decision reads (no field values: on Dask this frame travels alone)."""

    line: Series[pl.Int64] = pa.Field(alias=LINE, unique=True)
    id: Series[pl.String]
    """The given id, else the resolved one."""
    given_id: Series[pl.String] = pa.Field(alias=GIVEN_ID, nullable=True)
    key: Series[pl.String] = pa.Field(alias=KEY, nullable=True)
    holder: Series[pl.String] = pa.Field(alias=HOLDER, nullable=True)
    ok: Series[pl.Boolean] = pa.Field(alias=OK)
    """Passes the database's reference checks."""
    recorded: Series[pl.Boolean] = pa.Field(alias=RECORDED)
    """Rejected by the earlier run that committed this chunk (its decision stands)."""
    in_table: Series[pl.Boolean] = pa.Field(alias=IN_TABLE)
    """The row's id (or, id-less, its natural key) is in the table; looked up only when the
    write mode asks (insert, update), else False."""


class Decision(_Frame):
    """The in-file key decision per candidate line; one `duplicate_flag(key)` column per
    in-file unique key."""

    line: Series[pl.Int64] = pa.Field(alias=LINE, unique=True)
    id: Series[pl.String]
    given_id: Series[pl.String] = pa.Field(alias=GIVEN_ID, nullable=True)
    holder: Series[pl.String] = pa.Field(alias=HOLDER, nullable=True)
    taken: Series[pl.Boolean] = pa.Field(alias=TAKEN)
    """The natural key is held in the table by another id."""
    in_table: Series[pl.Boolean] = pa.Field(alias=IN_TABLE)
    refused: Series[pl.String] = pa.Field(alias=REFUSED, nullable=True, str_matches=RULE_ID)
    """The rule id of the write mode's refusal (`already_exists`, `not_found`), if any."""
    accepted: Series[pl.Boolean] = pa.Field(alias=ACCEPTED)


class LoadRows(_Frame):
    """The typed rows handed to the database: one per id, ids and required fields set."""

    line: Series[pl.Int64] = pa.Field(alias=LINE, unique=True, ge=1)


class MissingReferences(_Frame):
    """Rows whose referenced row does not exist."""

    line: Series[pl.Int64]
    field: Series[pl.String]
    rule: Series[pl.String]
    message: Series[pl.String]


class Rejects(_Frame):
    """Reject entries: one per broken rule per row, as the report and `import_rejects` hold
    them (their columns and types: `REJECT_COLUMNS`)."""

    line: Series[pl.Int64] = pa.Field(ge=1)
    field: Series[pl.String]
    rule: Series[pl.String] = pa.Field(str_matches=RULE_ID)
    message: Series[pl.String]
    value: Series[pl.String] = pa.Field(nullable=True)
    raw: Series[pl.String] = pa.Field(nullable=True)


@cache
def contract(model: type[_Frame], resource: Resource) -> pa.DataFrameSchema:
    """`model` with the resource's fields: text in `RowsRead`, typed in `Flagged` and
    `LoadRows`; in `LoadRows` the id is unique and it and the required fields are set."""
    schema = model.to_schema()
    if model is RowsRead:
        fields = {f.name: pa.Column(pl.String, nullable=True, required=False) for f in resource.fields}
    elif model in (Flagged, LoadRows):
        loaded = model is LoadRows
        fields = {
            f.name: pa.Column(
                POLARS_TYPES[f.kind],
                nullable=not (loaded and (f.required or f.name == "id")),
                unique=loaded and f.name == "id",
            )
            for f in resource.fields
        }
    else:
        return schema
    return schema.add_columns(fields)
