"""Versioned migrations: a database of the first release upgrades in place, a new field
reaches an existing table, and concurrent migrations apply each migration once."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import pytest

from bulkflow.db import Connection, database_url, migrate, migration_status
from bulkflow.settings import Settings
from schemas import RESOURCES
from schemas.migrations import NUMBERED, all_migrations
from schemas.resource import Field

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
        assert applied == [m.id for m in all_migrations()]
        status = migration_status(conn)
        assert status.version == NUMBERED[-1].id and status.pending == ()
        with conn.cursor() as cur:
            cur.execute("SELECT id, email FROM users")
            assert cur.fetchall() == [("u1", "a@x.io")]
            cur.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'import_rejects_chunk_idx'")
            assert cur.fetchone() == (1,)
        assert migrate(conn) == []  # each migration once


def test_a_new_nullable_field_reaches_an_existing_table(fresh_database: str) -> None:
    users = RESOURCES["users"]
    grown = dataclasses.replace(users, fields=(*users.fields, Field("nickname")))
    with adbc.connect(fresh_database) as conn:
        migrate(conn)
        _run(conn, ["INSERT INTO users (id, email, role) VALUES ('u1', 'a@x.io', 'reader')"])
        applied = migrate(conn, {**RESOURCES, "users": grown})
        assert len(applied) == 1 and applied[0].startswith("columns:users:")
        assert _columns(conn, "users")[-1] == "nickname"
        with conn.cursor() as cur:
            cur.execute("SELECT id, nickname FROM users")
            assert cur.fetchall() == [("u1", None)]


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
    expected = [m.id for m in all_migrations()]
    assert sorted(map(len, results)) == [0, 0, len(expected)]
    with adbc.connect(fresh_database) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migrations")
        assert cur.fetchone() == (len(expected),)
