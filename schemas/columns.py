"""The names of the columns a chunk's frames carry besides the resource's fields, and the
reject entries' columns: plain names, for the steps that only need to name a column (an
export among them) without loading the frame models and pandera (`schemas/frames.py`)."""

from __future__ import annotations

import polars as pl

from schemas.resource import RAW_SUFFIX

LINE = "_line"
RAW_RECORD = "_raw"
READ_RULE = "_read_rule"
READ_MESSAGE = "_read_message"
OK = "_ok"
KEY = "_key"
RESOLVED_ID = "_resolved_id"
HOLDER = "_holder"
GIVEN_ID = "_given_id"
RECORDED = "_recorded"
TAKEN = "_taken"
ACCEPTED = "_accepted"
IN_TABLE = "_in_table"
STAGED_CHUNK = "_chunk"
"""The chunk a row of an all-or-nothing job's staging table came from."""
REFUSED = "_refused"
CHANGE_COLUMN = "bulkflow_xid"
"""Each resource row's last writer, besides the declared fields: the top-level transaction id
(xid8) of the insert or update that made the row version (a column default and a BEFORE
UPDATE trigger keep it, migration 0013); incremental exports read it."""
"""Internal column names; the models of `schemas/frames.py` say which frame holds which."""
RULE_ID = r"^[a-z][a-z_]*$"
"""The shape of a stable rule id."""

REJECT_COLUMNS: dict[str, pl.DataType] = {
    "line": pl.Int64(),
    "field": pl.String(),
    "rule": pl.String(),
    "message": pl.String(),
    "value": pl.String(),
    "raw": pl.String(),
}
"""The columns of reject entries, as `frames.Rejects` declares and checks them."""


def duplicate_flag(key_field: str) -> str:
    """The `Decision` column flagging a later occurrence of an in-file key."""
    return f"_dup_{key_field}"


def raw_column(field_name: str) -> str:
    """The `Flagged` column holding a field's text as read."""
    return field_name + RAW_SUFFIX
