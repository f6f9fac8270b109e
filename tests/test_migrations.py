"""Versioned migrations: a database of the first release upgrades in place, a change no
migration covers is refused (a new field, a type changed), and concurrent migrations apply
each migration once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import pytest

from bulkflow.db import Connection, database_url, drift, migrate, migration_status, refuse_drift, table_columns
from bulkflow.errors import SchemaDriftError
from bulkflow.migrations import MIGRATIONS, Migration
from bulkflow.settings import Settings
from schemas import declared_tables

pytestmark = pytest.mark.usefixtures("db")
RELEASE_1 = Path(__file__).parent / "fixtures" / "schema_release_1.sql"


@pytest.fixture()
def fresh_database() -> Iterator[str]:
    """The URL of a new, empty database on the session's server."""
    admin = adbc.connect(database_url(Settings()))
    _autocommit(admin, "DROP DATABASE IF EXISTS migration_test")
    _autocommit(admin, "CREATE DATABASE migration_test")
    url = database_url(Settings()).replace("/postgres?", "/migration_test?")
    yield url
    _autocommit(admin, "DROP DATABASE IF EXISTS migration_test WITH (FORCE)")
    admin.close()


def _autocommit(conn: Connection, statement: str) -> None:
    conn.adbc_connection.set_autocommit(True)
    with conn.cursor() as cur:
        cur.execute(statement)


def _run(conn: Connection, statements: list[str]) -> None:
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.commit()


def _columns(conn: Connection, table: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position",
            parameters=(table,),
        )
        return [row[0] for row in cur.fetchall()]


def test_a_database_of_the_first_release_upgrades_in_place(fresh_database: str) -> None:
    with adbc.connect(fresh_database) as conn:
        _run(conn, [s for s in RELEASE_1.read_text().split(";\n") if s.strip()])
        _run(
            conn,
            [
                "INSERT INTO users (id, email, role) VALUES ('u1', 'a@x.io', 'reader')",
                "INSERT INTO import_jobs (job_key, resource, source, format, content_sha256, chunk_size) "
                "VALUES ('k', 'users', 'f.csv', 'csv', 'abc', 10)",
            ],
        )
        assert migration_status(conn).version is None
        applied = migrate(conn)
        assert applied == [m.id for m in MIGRATIONS]
        status = migration_status(conn)
        assert status.version == MIGRATIONS[-1].id and status.pending == ()
        with conn.cursor() as cur:
            cur.execute("SELECT id, email FROM users")
            assert cur.fetchall() == [("u1", "a@x.io")]
            cur.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'import_rejects_chunk_idx'")
            assert cur.fetchone() == (1,)
        assert migrate(conn) == []  # each migration once


def test_a_field_no_migration_covers_is_refused_until_one_adds_it(fresh_database: str) -> None:
    declared = declared_tables()
    grown = {**declared, "users": {**declared["users"], "nickname": "text"}}
    with adbc.connect(fresh_database) as conn:
        migrate(conn)
        refuse_drift(conn, declared)  # the frozen migrations match the resources
        with pytest.raises(SchemaDriftError) as refused:
            refuse_drift(conn, grown)
        message = str(refused.value)
        assert "users.nickname (text) is missing" in message and "bulkflow/migrations.py" in message
        assert "\n" not in message
        adds = Migration("9001", "users.nickname", ("ALTER TABLE users ADD COLUMN nickname text",))
        assert migrate(conn, (*MIGRATIONS, adds)) == ["9001"]
        refuse_drift(conn, grown)
        assert _columns(conn, "users")[-1] == "nickname"


def test_a_column_of_another_type_is_refused(fresh_database: str) -> None:
    with adbc.connect(fresh_database) as conn:
        migrate(conn)
        _run(conn, ["ALTER TABLE users ALTER COLUMN active TYPE text"])
        problems = drift(declared_tables(), table_columns(conn, ["users", "articles", "comments"]))
    assert problems == ["users.active is text, declared boolean"]


def test_concurrent_migrations_apply_each_migration_once(fresh_database: str) -> None:
    results: list[list[str]] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        with adbc.connect(fresh_database) as conn:
            barrier.wait()
            results.append(migrate(conn))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    expected = [m.id for m in MIGRATIONS]
    assert sorted(map(len, results)) == [0, 0, len(expected)]
    with adbc.connect(fresh_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migrations")
        assert cur.fetchone() == (len(expected),)


def test_db_status_names_the_version_and_any_drift(fresh_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    monkeypatch.setenv("DATABASE_URL", fresh_database)
    assert CliRunner().invoke(app, ["db", "migrate"]).exit_code == 0
    status = CliRunner().invoke(app, ["db", "status"])
    assert status.exit_code == 0 and f"version:  {MIGRATIONS[-1].id}" in status.stdout
    assert "pending:  none" in status.stdout and "drift:" not in status.stdout
    with adbc.connect(fresh_database) as conn:
        _run(conn, ["ALTER TABLE users ALTER COLUMN active TYPE text"])
    status = CliRunner().invoke(app, ["db", "status"])
    assert "drift:    users.active is text, declared boolean (no migration covers it)" in status.stdout
    refused = CliRunner().invoke(app, ["db", "migrate"])
    assert refused.exit_code == 2
    assert (
        refused.stderr.strip().splitlines()[-1].startswith("error: the database does not match the declared resources")
    )
