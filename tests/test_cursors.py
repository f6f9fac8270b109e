"""Cursor tokens: they round-trip, and nothing but a snapshot's digits reaches the SQL."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bulkflow.errors import ParameterError
from decisions import sql
from decisions.cursors import Cursor
from decisions.exports import deletes_location

TAKEN = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)


@given(
    xmin=st.integers(1, 2**63),
    running=st.lists(st.integers(0, 1000), max_size=20, unique=True),
    spread=st.integers(0, 1000),
)
def test_a_token_reads_back_as_the_cursor_it_was_made_of(xmin: int, running: list[int], spread: int) -> None:
    xip = ",".join(str(xmin + r) for r in sorted(running))
    cursor = Cursor("users", f"{xmin}:{xmin + 1001 + spread}:{xip}", TAKEN)
    assert Cursor.read(cursor.token, "users") == cursor
    assert "=" not in cursor.token and cursor.token.startswith("c1.")


def _forged(snapshot: object, resource: str = "users") -> str:
    body = {"resource": resource, "snapshot": snapshot, "taken_at": TAKEN.isoformat()}
    return "c1." + base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "c1.",
        "c2.abc",
        "c1.!!!",
        _forged("1:2:'); DROP TABLE users; --"),
        _forged("1:2:3 OR true"),
        _forged(12),
        "c1." + base64.urlsafe_b64encode(b'{"resource": "users"}').decode(),
        "c1." + base64.urlsafe_b64encode(b"[1, 2]").decode(),
    ],
)
def test_a_token_that_is_not_a_cursor_is_refused_in_one_line(token: str) -> None:
    with pytest.raises(ParameterError, match="cannot read the cursor") as refused:
        Cursor.read(token, "users")
    assert "\n" not in str(refused.value)


def test_a_cursor_of_another_resource_or_too_old_is_refused() -> None:
    cursor = Cursor("users", "10:12:11", TAKEN)
    with pytest.raises(ParameterError, match="of an export of users, not of comments"):
        Cursor.read(cursor.token, "comments")
    cursor.refuse_if_older_than(TAKEN + timedelta(days=30), 30)
    with pytest.raises(ParameterError, match="2026-12-03 17:00 UTC, more than 30 days ago"):
        cursor.refuse_if_older_than(TAKEN + timedelta(days=30, seconds=1), 30)


def test_changes_since_a_snapshot_are_found_through_the_index_bound_and_the_visibility_test() -> None:
    text = sql.export_select("users", ["id"], [], None, "10:12:11")
    assert text == (
        'SELECT "id" FROM "users" WHERE "bulkflow_xid" >= pg_snapshot_xmin(\'10:12:11\'::pg_snapshot) '
        'AND NOT pg_visible_in_snapshot("bulkflow_xid", \'10:12:11\'::pg_snapshot) ORDER BY "id"'
    )
    tombstones = sql.tombstones_sql("o'dd", "10:12:")
    assert "t.resource = 'o''dd'" in tombstones and 'FROM "o\'dd" r' in tombstones
    assert tombstones.endswith("GROUP BY t.id ORDER BY t.id")
    assert "truncated_xid" in sql.truncated_since_sql("users", "10:12:")


@pytest.mark.parametrize(
    ("location", "format", "deletes"),
    [
        ("users.csv", "csv", "users.deletes.csv"),
        ("s3://bucket/x.y/users-run.parquet", "parquet", "s3://bucket/x.y/users-run.deletes.parquet"),
        ("s3://bucket/x.y/users", "parquet", "s3://bucket/x.y/users.deletes.parquet"),
        ("out", "csv", "out.deletes.csv"),
    ],
)
def test_the_deletes_file_sits_beside_the_export(location: str, format: str, deletes: str) -> None:
    """A dataset's directory (no suffix) gets its deletes beside it, with the format's suffix."""
    assert deletes_location(location, format) == deletes
