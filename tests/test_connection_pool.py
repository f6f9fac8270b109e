"""Connections kept for reuse, and one opened ahead: the next taker gets the connection
being opened (waiting for it), and a connection opened ahead is never lost or leaked."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

from bulkflow.db import Connection, _Pool

URL = "postgresql://example/db"


class _FakeConnection:
    def __init__(self) -> None:
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


def _opener(release: threading.Event, opened: list[_FakeConnection], fail: bool = False) -> Callable[[str], Connection]:
    def open_one(url: str) -> Connection:
        assert url == URL
        release.wait(5)
        if fail:
            raise ConnectionError("refused")
        opened.append(_FakeConnection())
        return cast(Connection, opened[-1])

    return open_one


def _taken(pool: _Pool) -> object:
    return pool.take(URL)


def test_the_next_take_waits_for_the_connection_opened_ahead() -> None:
    pool, release, opened = _Pool(), threading.Event(), list[_FakeConnection]()
    pool.open_ahead(URL, _opener(release, opened))
    threading.Timer(0.05, release.set).start()  # still opening when the taker comes
    assert _taken(pool) is opened[0]
    assert pool.take(URL) is None  # taken once


def test_nothing_is_opened_ahead_when_a_connection_is_idle_or_coming() -> None:
    pool, release, opened = _Pool(), threading.Event(), list[_FakeConnection]()
    kept = _FakeConnection()
    pool.keep(URL, cast(Connection, kept))
    pool.open_ahead(URL, _opener(release, opened))
    release.set()
    assert _taken(pool) is kept and opened == []
    pool.open_ahead(URL, _opener(release, opened))
    pool.open_ahead(URL, _opener(release, opened))
    assert _taken(pool) is opened[0] and len(opened) == 1


def test_a_failed_open_ahead_leaves_the_taker_to_connect_itself() -> None:
    pool, release = _Pool(), threading.Event()
    release.set()
    pool.open_ahead(URL, _opener(release, [], fail=True))
    assert pool.take(URL) is None


def test_a_connection_opened_ahead_after_a_clear_is_closed() -> None:
    pool, release, opened = _Pool(), threading.Event(), list[_FakeConnection]()
    pool.open_ahead(URL, _opener(release, opened))
    pool.clear()
    release.set()
    for _ in range(500):  # the opener's thread appends, then the clear's callback closes
        if opened and opened[0].closed.wait(0.01):
            break
        threading.Event().wait(0.01)
    assert opened and opened[0].closed.is_set()
    assert pool.take(URL) is None


def test_the_next_connect_takes_the_connection_opened_ahead(db: None) -> None:
    """`connect_ahead` (the CLI calls it before Prefect creates the run) opens what the
    run's first `connect` then uses, instead of a connection of its own."""
    from bulkflow import db as database
    from bulkflow.db import connect, connect_ahead, database_url
    from bulkflow.settings import Settings

    settings = Settings()
    url = database_url(settings)
    database._pool.clear()
    connect_ahead(settings, session=False)
    assert url in database._pool.coming
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
    assert url not in database._pool.coming and len(database._pool.idle[url]) == 1


def test_nothing_connects_ahead_to_an_embedded_server_that_is_not_running(tmp_path: Path) -> None:
    """Starting the embedded server stays with its first use, inside the run."""
    from bulkflow import db as database
    from bulkflow.db import connect_ahead
    from bulkflow.settings import Settings

    connect_ahead(Settings(home=tmp_path), session=True)
    assert not (tmp_path / "pgdata").exists()
    assert not any(str(tmp_path) in url for url in (*database._pool.coming, *database._sessions.coming))


def test_connections_know_postgresqls_types_without_reading_the_catalogue(db: None) -> None:
    """Every connection bulkflow opens (the pool's and the sessions') takes PostgreSQL's types
    from the driver's own table (`bulkflow/driver.py`), and reads each declared column as
    its Arrow type, as a connection that read `pg_type` would."""
    import adbc_driver_postgresql.dbapi as adbc

    from bulkflow.db import connect, database_url, end_session, open_session
    from bulkflow.settings import Settings
    from schemas import declared_tables

    settings = Settings()
    session = open_session(settings, "types-test")
    try:
        with connect(settings) as conn, adbc.connect(database_url(settings)) as catalogue_read:
            for opened in (conn, session):
                assert opened.adbc_database.get_option("adbc.postgresql.type_resolver_mode") == "builtin"
            for table, columns in declared_tables().items():
                query = f"SELECT {', '.join(columns)} FROM {table} LIMIT 0"
                schemas = []
                for opened in (conn, catalogue_read):
                    with opened.cursor() as cur:
                        cur.execute(query)
                        schemas.append(cur.fetch_arrow_table().schema)
                    opened.rollback()
                assert schemas[0] == schemas[1], table
    finally:
        end_session(settings, session)
