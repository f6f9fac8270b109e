"""Incremental exports: a cursor never misses a row (a transaction held open across an
export, committed after it), each change once in its latest version, deletes by anyone as
tombstones or a deletes file, and the refusals of cursors that cannot be honoured."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from bulkflow.db import connect
from bulkflow.errors import ParameterError
from bulkflow.settings import Settings
from cli.app import app
from decisions.cursors import Cursor
from decisions.exports import plan_export
from schemas.resource import RuleContext
from tasks.export import ExportStats, stream_export
from tests.helpers import DATA, import_file, load_samples, sql

pytestmark = pytest.mark.usefixtures("prefect_api", "db")

LATE_WRITES = {
    "users": (
        "UPDATE users SET name = 'written late' WHERE id = 'usr_alice'",
        "INSERT INTO users (id, email, name, role, active) VALUES ('usr_late', 'late@example.com', 'Late', 'reader', true)",
    ),
    "articles": (
        "UPDATE articles SET title = 'written late' WHERE id = (SELECT min(id) FROM articles)",
        "INSERT INTO articles (id, slug, title, author_id, status) "
        "SELECT 'art_late', 'written-late', 'Late', author_id, 'draft' FROM articles ORDER BY id LIMIT 1",
    ),
    "comments": (
        "UPDATE comments SET body = 'written late' WHERE id = (SELECT min(id) FROM comments)",
        "INSERT INTO comments (id, article_id, user_id, body) "
        "SELECT 'cmt_late', article_id, user_id, 'Late' FROM comments ORDER BY id LIMIT 1",
    ),
}

GONE_USER = "INSERT INTO users (id, email, name, role) VALUES ('usr_gone', 'gone@example.com', 'Gone', 'reader')"
"""A user nothing references, deleted by the tests."""


def export(resource: str, since: str | None = None, **options: Any) -> tuple[list[dict[str, Any]], ExportStats]:
    """An NDJSON export of `resource` (from `since`): its lines, parsed, and its stats."""
    settings = Settings()
    request = plan_export(resource, "ndjson", context=RuleContext.of(settings), since=since, **options)
    sink = io.BytesIO()
    stats = stream_export(request, sink, settings=settings)
    return [json.loads(line) for line in sink.getvalue().splitlines()], stats


@contextmanager
def held_open(*statements: str) -> Iterator[Any]:
    """A transaction that ran `statements` and stays open until the block ends, then commits."""
    with connect(Settings()) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        yield cur
        conn.commit()


@pytest.mark.parametrize("resource", ["users", "articles", "comments"])
def test_a_transaction_begun_before_the_cursor_and_committed_after_it_is_in_the_next_export(resource: str) -> None:
    load_samples()
    update, insert = LATE_WRITES[resource]
    with held_open(update, insert):
        before, first = export(resource)  # the late writes are not committed: not in this export
        assert first.cursor is not None
    full, _ = export(resource)
    changed_ids = {row["id"] for row in full} - {row["id"] for row in before}
    updated = next(row for row in full if "written late" in row.values())
    assert len(changed_ids) == 1 and updated not in before

    since, second = export(resource, since=first.cursor)
    # exactly the two rows the late transaction wrote, each once, as committed
    assert sorted(since, key=lambda row: row["id"]) == sorted(
        [updated, *(row for row in full if row["id"] in changed_ids)], key=lambda row: row["id"]
    )
    assert second.rows == 2 and second.deleted == 0
    nothing, _ = export(resource, since=second.cursor)
    assert nothing == []


def test_changes_made_by_imports_and_by_sql_each_appear_once_in_their_latest_version(tmp_path: Path) -> None:
    load_samples()
    sql("UPDATE users SET role = 'editor' WHERE id = 'usr_bob'")  # before the cursor: not in the changes
    _, first = export("users")
    changed = tmp_path / "users.ndjson"
    changed.write_text(
        json.dumps({"id": "usr_alice", "email": "alice@example.com", "name": "Alice Changed", "role": "admin"}) + "\n"
    )
    assert import_file("users", changed, mode="update").updated == 1
    sql("UPDATE users SET name = 'Alice Twice' WHERE id = 'usr_alice'")
    sql("UPDATE users SET active = false WHERE id = 'usr_carol'")
    rows, stats = export("users", since=first.cursor)
    assert [(row["id"], row["name"]) for row in rows] == [("usr_alice", "Alice Twice"), ("usr_carol", "Carol, PhD")]
    assert stats.rows == 2

    # an identical re-import writes nothing, so nothing is exported as changed
    again = tmp_path / "same.ndjson"
    again.write_text(json.dumps(rows[1]) + "\n")  # carol's row as exported: every value as stored
    _, second = export("users", since=first.cursor)
    assert import_file("users", again, mode="update", idempotency_key="same").unchanged == 1
    assert export("users", since=second.cursor)[0] == []


def test_deletes_by_sql_and_by_replace_are_tombstones_after_the_rows(tmp_path: Path) -> None:
    load_samples()
    _, first = export("comments")
    ids = [row[0] for row in sql("SELECT id FROM comments ORDER BY id")]
    sql(f"DELETE FROM comments WHERE id = '{ids[0]}'")
    survivor, replaced = ids[1], ids[2:]
    pl.read_ndjson(DATA / "comments.ndjson").filter(pl.col("id") == survivor).write_ndjson(tmp_path / "one.ndjson")
    report = import_file("comments", tmp_path / "one.ndjson", mode="replace")
    assert report.deleted == len(replaced) > 0

    rows, stats = export("comments", since=first.cursor)
    tombstones = [row for row in rows if row.get("_deleted")]
    assert sorted(row["id"] for row in tombstones) == sorted([ids[0], *replaced])
    assert all(set(row) == {"id", "_deleted", "_deleted_at"} for row in tombstones)
    assert rows[-len(tombstones) :] == tombstones  # after the rows
    assert datetime.fromisoformat(tombstones[0]["_deleted_at"]) > datetime.now(UTC) - timedelta(minutes=5)
    assert stats.deleted == len(tombstones) and stats.rows == len(rows) - len(tombstones)
    assert survivor not in {row["id"] for row in tombstones}
    # a full export carries no tombstones
    assert not any(row.get("_deleted") for row in export("comments")[0])


def test_a_row_deleted_then_inserted_again_is_a_change_not_a_delete() -> None:
    load_samples()
    _, first = export("users")
    sql("DELETE FROM comments WHERE user_id = 'usr_oscar'")
    sql("DELETE FROM articles WHERE author_id = 'usr_oscar'")
    sql("DELETE FROM users WHERE id = 'usr_oscar'")
    sql("INSERT INTO users (id, email, name, role) VALUES ('usr_oscar', 'oscar@example.com', 'Oscar Again', 'reader')")
    rows, stats = export("users", since=first.cursor)
    assert [(row["id"], row["name"]) for row in rows] == [("usr_oscar", "Oscar Again")] and stats.deleted == 0


def test_an_incremental_csv_export_writes_its_deletes_beside_it_and_the_cursor_file_carries_on(tmp_path: Path) -> None:
    load_samples()
    sql(GONE_USER)
    cursor_file, out = tmp_path / "state" / "users.cursor", tmp_path / "users.csv"
    command = ["export", "users", "-f", "csv", "-o", str(out), "--cursor-file", str(cursor_file)]
    full = CliRunner().invoke(app, command)
    assert full.exit_code == 0, full.output
    assert pl.read_csv(out).height == len(sql("SELECT id FROM users")) and not (tmp_path / "users.deletes.csv").exists()
    token = cursor_file.read_text().strip()
    assert f"cursor: {token}" in full.output.replace("\n", "")

    sql("UPDATE users SET name = 'Bob Changed' WHERE id = 'usr_bob'")
    sql("DELETE FROM users WHERE id = 'usr_gone'")
    second = CliRunner().invoke(app, command)
    assert second.exit_code == 0, second.output
    assert pl.read_csv(out)["id"].to_list() == ["usr_bob"]
    deletes = pl.read_csv(tmp_path / "users.deletes.csv")
    assert deletes.columns == ["id", "_deleted_at"] and deletes["id"].to_list() == ["usr_gone"]
    assert cursor_file.read_text().strip() != token
    third = CliRunner().invoke(app, command)
    assert third.exit_code == 0 and pl.read_csv(out).height == 0
    assert pl.read_csv(tmp_path / "users.deletes.csv").height == 0


def test_cursors_that_cannot_be_honoured_are_refused_in_one_line() -> None:
    load_samples()
    _, users = export("users")
    assert users.cursor is not None
    refusals = {
        "garbage": ("c1.nope", "cannot read the cursor"),
        "of another resource": (users.cursor, "of an export of users, not of articles"),
    }
    for token, message in refusals.values():
        with pytest.raises(ParameterError, match=message):
            export("articles", since=token)
    old = Cursor.read(users.cursor, "users")
    expired = Cursor("users", old.snapshot, old.taken_at - timedelta(days=31)).token
    with pytest.raises(ParameterError, match="more than 30 days ago"):
        export("users", since=expired)
    _, comments = export("comments")
    sql("TRUNCATE comments")
    with pytest.raises(ParameterError, match="comments was truncated at .* Do a full export"):
        export("comments", since=comments.cursor)
    streamed = CliRunner().invoke(app, ["export", "users", "-f", "csv", "--since", users.cursor])
    assert streamed.exit_code == 2 and streamed.output.count("\n") == 1
    assert "writes its deletes to a second file" in streamed.output
    limited = export("users", limit=1)[1]
    assert limited.cursor is None  # a limit cuts the rows: no cursor to carry on from


def test_the_api_sends_the_cursor_as_a_header_and_takes_it_back_as_since() -> None:
    load_samples()
    sql(GONE_USER)
    with TestClient(create_app(Settings())) as client:
        full = client.get("/v1/exports", params={"resource": "users"})
        assert full.status_code == 200
        token = full.headers["x-bulkflow-cursor"]
        sql("UPDATE users SET role = 'editor' WHERE id = 'usr_carol'")
        sql("DELETE FROM users WHERE id = 'usr_gone'")
        since = client.get("/v1/exports", params={"resource": "users", "since": token})
        lines = [json.loads(line) for line in since.text.splitlines()]
        assert [line["id"] for line in lines] == ["usr_carol", "usr_gone"] and lines[1]["_deleted"] is True
        assert since.headers["x-bulkflow-cursor"] != token
        refused = client.get("/v1/exports", params={"resource": "users", "since": token, "format": "csv"})
        assert refused.status_code == 400 and "second file" in refused.text
