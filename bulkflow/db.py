"""PostgreSQL access: where the database is, connections, the migrations and the drift check.

Driver errors become typed errors here, where they are raised (`errors.database_error`):
whoever holds a connection sees a `DatabaseUnavailable` (a retry may cure it) or a
`DatabaseError` (it cannot), with the SQLSTATE, never the driver's own classes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import adbc_driver_manager
import adbc_driver_manager.dbapi
import adbc_driver_postgresql.dbapi as adbc

from bulkflow.driver import DRIVER_OPTIONS
from bulkflow.embedded import embedded_data_dir, embedded_url, running_server_url, stop_server
from bulkflow.errors import InvariantError, SchemaDriftError, database_error, is_retryable
from bulkflow.migrations import MIGRATIONS, SCHEMA_MIGRATIONS_DDL, Migration
from bulkflow.settings import Settings

Connection: TypeAlias = adbc_driver_manager.dbapi.Connection
Cursor: TypeAlias = adbc_driver_manager.dbapi.Cursor

_migrated: set[str] = set()
_migrate_lock = threading.Lock()
# Serialises concurrent migrations from several processes on the same database.
_MIGRATION_LOCK_ID = 0x6B756C6B


def database_url(settings: Settings) -> str:
    """The URL of the configured database, starting the embedded one when needed."""
    return settings.external_database_url() or embedded_url(str(settings.home))


def stop_embedded(settings: Settings) -> bool:
    """Stop the embedded server if this project runs one; True when it was stopped."""
    data_dir = embedded_data_dir(settings.home)
    if not settings.embedded or not (data_dir / "postmaster.pid").exists():
        return False
    _pool.clear()
    _sessions.clear()
    stop_server(data_dir)
    embedded_url.cache_clear()
    _migrated.clear()
    _checked.clear()
    return True


def redacted_url(url: str) -> str:
    """The URL without its credentials, for messages."""
    head, sep, tail = url.partition("@")
    return f"{head.split(':')[0]}://***@{tail}" if sep else url


class _Pool:
    """Idle connections kept for reuse: opening one costs a new backend and its
    authentication (5-10 ms here), which a 20-chunk import would otherwise pay 25 times."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.idle: dict[str, list[Connection]] = {}
        self.coming: dict[str, Future[Connection]] = {}
        """A connection being opened ahead (`open_ahead`), for the next `take` of its URL."""
        self.lock = threading.Lock()

    def take(self, url: str) -> Connection | None:
        """An idle connection, or the one being opened ahead (waited for); None when there is
        neither, or when opening it ahead failed (the caller opens its own, and meets that
        failure itself, with its own retries)."""
        with self.lock:
            stack = self.idle.get(url)
            if stack:
                return stack.pop()
            coming = self.coming.pop(url, None)
        if coming is None:
            return None
        try:
            return coming.result()
        except Exception:  # noqa: BLE001 - see the docstring: the caller connects again
            return None

    def open_ahead(self, url: str, opener: Callable[[str], Connection]) -> None:
        """Begin opening a connection with `opener` on a thread of its own, for the next
        `take`, unless one is idle or being opened already."""
        with self.lock:
            if self.idle.get(url) or url in self.coming:
                return
            coming: Future[Connection] = Future()
            self.coming[url] = coming

        def fulfil() -> None:
            try:
                coming.set_result(opener(url))
            except BaseException as error:  # noqa: BLE001 - handed to whoever takes it
                coming.set_exception(error)

        threading.Thread(target=fulfil, name="connect-ahead", daemon=True).start()

    def give_back(self, url: str, conn: Connection) -> None:
        """Keep a connection whose transaction ended cleanly; close it otherwise."""
        try:
            conn.rollback()
        except Exception:  # noqa: BLE001 - a broken connection is simply not reused
            close_quietly(conn)
            return
        self.keep(url, conn)

    def keep(self, url: str, conn: Connection) -> None:
        """Keep a connection that holds nothing, unless enough are kept (then close it)."""
        with self.lock:
            stack = self.idle.setdefault(url, [])
            if len(stack) < self.size:
                stack.append(conn)
                return
        close_quietly(conn)

    def clear(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, {}
            coming, self.coming = self.coming, {}
        for stack in idle.values():
            for conn in stack:
                close_quietly(conn)
        for future in coming.values():
            future.add_done_callback(_close_opened)


def _close_opened(future: Future[Connection]) -> None:
    """Close the connection a future opened, if it opened one."""
    if future.exception() is None:
        close_quietly(future.result())


def close_quietly(conn: Connection) -> None:
    """Close a connection that may be dead already."""
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a dead connection may fail; nothing to do
        pass


_pool = _Pool()
_sessions = _Pool(size=2)
"""Sessions ended with `end_session`: a landing pick-up's imports take a write slot each,
one after the other, and a new session cost each of them 30 ms."""


def open_session(settings: Settings, name: str) -> Connection:
    """A connection of the caller's own, outside the pool, in autocommit, called `name`
    (`application_name`): for a session that lives as long as what it holds (an advisory
    lock). One ended earlier (`end_session`) is reused. DatabaseUnavailable when unreachable."""
    url = database_url(settings)
    kept = _sessions.take(url)
    if kept is not None:
        try:
            return _named(kept, name)
        except Exception:  # noqa: BLE001 - the server went away since: every kept session is dead
            close_quietly(kept)
            _sessions.clear()
    conn = _open_session(url)
    try:
        return _named(conn, name)
    except BaseException:
        close_quietly(conn)
        raise


def open_session_ahead(settings: Settings) -> None:
    """Begin connecting the next `open_session`'s session on a thread of its own, so that its
    connect (a new backend and its authentication) overlaps what the caller does until
    then; nothing when a kept session waits already."""
    _sessions.open_ahead(database_url(settings), _open_session)


def connect_ahead(settings: Settings, *, session: bool) -> None:
    """Begin opening the next `connect`'s connection, and with `session` the next
    `open_session`'s, each on a thread of its own (the driver lets go of the GIL as it
    connects), so that their connects overlap what the caller does until then. Only when the
    database is known to run (a configured server, or the embedded one up): an embedded
    server to start is started by the first use, as ever; nothing either when one is
    idle or coming already."""
    url = settings.external_database_url() or running_server_url(embedded_data_dir(settings.home))
    if url is None:
        return
    _pool.open_ahead(url, _open)
    if session:
        _sessions.open_ahead(url, _open_session)


def _open_session(url: str) -> Connection:
    """A new connection in autocommit; DatabaseUnavailable when the server cannot be reached."""
    conn = _open(url)
    try:
        conn.adbc_connection.set_autocommit(True)
    except BaseException:
        close_quietly(conn)
        raise
    return conn


def end_session(settings: Settings, conn: Connection) -> None:
    """Keep a session of `open_session` for the next one, once it holds nothing (every
    advisory lock released); close it when that fails."""
    try:
        with translated(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock_all()")
    except Exception:  # noqa: BLE001 - a session that cannot be cleared is closed, which clears it
        close_quietly(conn)
        return
    _sessions.keep(database_url(settings), conn)


def _named(conn: Connection, name: str) -> Connection:
    with translated(), conn.cursor() as cur:
        cur.execute("SELECT set_config('application_name', $1, false)", parameters=(name,))
    return conn


def _open(url: str) -> Connection:
    """A new connection; DatabaseUnavailable when the server cannot be reached."""
    try:
        return adbc.connect(url, db_kwargs=DRIVER_OPTIONS)
    except adbc_driver_manager.Error as exc:
        raise database_error(exc, f"cannot connect to PostgreSQL at {redacted_url(url)}", reached=False) from exc


@contextmanager
def connect(settings: Settings, *, migrate: bool = True, declared: Columns | None = None) -> Iterator[Connection]:
    """A connection in a transaction (autocommit off), never committed for you; the schema
    migrated first, and held to the `declared` tables when given (`refuse_drift`).

    Connections are reused: on a clean exit the transaction is rolled back (whatever was not
    committed is discarded) and the connection kept; after an error it is closed, since its
    state is unknown.
    """
    url = database_url(settings)
    conn = _pool.take(url)
    if conn is None:
        conn = _open(url)
    try:
        with translated():
            if migrate:
                ensure_migrated(conn, url)
            if declared is not None:
                refuse_drift(conn, declared, url)
            yield conn
    except BaseException as exc:
        close_quietly(conn)
        if is_retryable(exc):
            _pool.clear()  # the server went away: every idle connection is as dead as this one
        raise
    _pool.give_back(url, conn)


@contextmanager
def translated() -> Iterator[None]:
    """Raise the driver's errors as typed ones (`errors.database_error`); every other error
    passes as it is. A caller that handles a driver error itself (a constraint it expects)
    does so inside, before it gets here."""
    try:
        yield
    except adbc_driver_manager.Error as exc:
        raise database_error(exc, "PostgreSQL refused a statement") from exc


LOADING_SESSION = (
    # Safe for exactly-once: the ledger row commits with the chunk, so a commit lost in a
    # crash is a chunk redone, never a chunk half-applied or counted twice.
    "SET LOCAL synchronous_commit = off",
    # The stage is one chunk and the targets are indexed on every probed key, so the only
    # good plan is: scan the stage, probe the target's index per staged row. Statistics
    # cannot be trusted to find it (the stage is a fresh temp table; a target truncated or
    # filled by this very import looks empty), and a wrong plan is quadratic.
    "SET LOCAL enable_hashjoin = off",
    "SET LOCAL enable_mergejoin = off",
    "SET LOCAL enable_seqscan = off",
    # The disabled plans make every chunk query look expensive enough to JIT-compile, which
    # costs more than the query.
    "SET LOCAL jit = off",
    # A backend whose client died mid-statement (kill -9) notices within seconds instead of
    # holding its chunk's ledger row for minutes; and no lock is waited on forever.
    "SET LOCAL client_connection_check_interval = '2s'",
    "SET LOCAL lock_timeout = '60s'",
)
CHUNK_PLANS = frozenset(setting for setting in LOADING_SESSION if "enable_" in setting)
"""The plan settings only a chunk's statements want: a whole job's staged rows, analysed
first, are planned by their statistics (an anti-join of 1M staged rows against 1M table
rows as nested loops over an unindexed stage never ends)."""


def fetch_one(cursor: Cursor) -> tuple[Any, ...]:
    """The row a statement that always returns one row returned."""
    row = cursor.fetchone()
    if row is None:
        raise InvariantError("a statement that returns one row returned none")
    return row


def session_settings(*, whole_job: bool = False) -> list[str]:
    """LOADING_SESSION's statements; for statements over a whole job's analysed rows
    (`whole_job`), with every plan of CHUNK_PLANS allowed (again, in a transaction that
    wrote chunks before)."""
    return [s.replace("= off", "= on") if whole_job and s in CHUNK_PLANS else s for s in LOADING_SESSION]


def tune_session(cursor: Cursor, *, whole_job: bool = False) -> None:
    """Apply `session_settings` to the cursor's current transaction."""
    for setting in session_settings(whole_job=whole_job):
        cursor.execute(setting)


def execute(settings: Settings, statement: str, parameters: tuple[object, ...] = ()) -> None:
    """Run one statement in its own transaction and commit it."""
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(statement, parameters=parameters or None)
        conn.commit()


def query_one(settings: Settings, statement: str, parameters: tuple[object, ...] = ()) -> tuple[Any, ...] | None:
    """The first row of a query, or None."""
    with connect(settings) as conn, conn.cursor() as cur:
        cur.execute(statement, parameters=parameters or None)
        return cur.fetchone()


def execute_all(conn: Connection, statements: tuple[str, ...] | list[str]) -> None:
    """Run statements one by one (ADBC prepares each, so no multi-statement strings)."""
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


@dataclass(frozen=True)
class MigrationStatus:
    """Which migrations a database has, and which are pending."""

    applied: tuple[str, ...]
    pending: tuple[Migration, ...]

    @property
    def version(self) -> str | None:
        """The latest migration applied (None on a database never migrated)."""
        known = [m.id for m in MIGRATIONS if m.id in self.applied]
        return known[-1] if known else None


def pending(applied: set[str], migrations: tuple[Migration, ...] = MIGRATIONS) -> tuple[Migration, ...]:
    """The migrations not among the `applied` ids, in order."""
    return tuple(m for m in migrations if m.id not in applied)


def migration_status(conn: Connection) -> MigrationStatus:
    applied = _applied(conn)
    conn.rollback()
    return MigrationStatus(tuple(sorted(applied)), pending(applied))


def migrate(conn: Connection, migrations: tuple[Migration, ...] = MIGRATIONS) -> list[str]:
    """Apply the pending migrations, each once, in one transaction, under an advisory lock
    (two processes starting at once: the second waits, then finds nothing to do). Returns
    the ids applied now."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")
        cur.execute(SCHEMA_MIGRATIONS_DDL)
        todo = pending(_applied(conn), migrations)
        for migration in todo:
            for statement in migration.statements:
                cur.execute(statement)
            cur.execute(
                "INSERT INTO schema_migrations (id, description) VALUES ($1, $2)",
                parameters=(migration.id, migration.description),
            )
    conn.commit()
    return [m.id for m in todo]


def _applied(conn: Connection) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not fetch_one(cur)[0]:
            return set()
        cur.execute("SELECT id FROM schema_migrations")
        return {row[0] for row in cur.fetchall()}


def ensure_migrated(conn: Connection, url: str | None = None) -> None:
    """Migrate once per process and database: a cheap read when nothing is pending."""
    key = url or "default"
    with _migrate_lock:
        if key in _migrated:
            return
        if pending(_applied(conn)):
            migrate(conn)
        else:
            conn.rollback()
        _migrated.add(key)


Columns = Mapping[str, Mapping[str, str]]
"""Tables and their columns: `{table: {column: PostgreSQL type}}`."""
_TYPE_NAMES = {"timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone"}


def table_columns(conn: Connection, tables: list[str]) -> dict[str, dict[str, str]]:
    """The columns the database has for `tables`, with their types as PostgreSQL writes them."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname = ANY($1) AND c.relkind = 'r' "
            "AND pg_table_is_visible(c.oid) AND a.attnum > 0 AND NOT a.attisdropped",
            parameters=(tables,),
        )
        rows = cur.fetchall()
    conn.rollback()
    found: dict[str, dict[str, str]] = {table: {} for table in tables}
    for table, column, type_name in rows:
        found[table][column] = type_name
    return found


def drift(declared: Columns, actual: Columns) -> list[str]:
    """What the tables lack of their declaration: one line per missing table or column, or
    column of another type. Columns the database has beyond the declared ones are left alone."""
    problems = []
    for table, columns in declared.items():
        have = actual.get(table, {})
        if not have:
            problems.append(f"table {table} is missing")
            continue
        for column, declared_type in columns.items():
            wanted = _TYPE_NAMES.get(declared_type, declared_type)
            if column not in have:
                problems.append(f"{table}.{column} ({wanted}) is missing")
            elif have[column] != wanted:
                problems.append(f"{table}.{column} is {have[column]}, declared {wanted}")
    return problems


_checked: set[str] = set()


def refuse_drift(conn: Connection, declared: Columns, url: str | None = None) -> None:
    """SchemaDriftError when the tables do not match their declaration: a change no
    migration covers. With `url`, checked once per process and database."""
    if url in _checked:
        return
    problems = drift(declared, table_columns(conn, list(declared)))
    if problems:
        raise SchemaDriftError(
            f"the database does not match the declared resources: {'; '.join(problems)}. "
            "No migration covers this change: add one to bulkflow/migrations.py, then run `bulkflow db migrate`"
        )
    if url is not None:
        _checked.add(url)
