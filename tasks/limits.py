"""How many imports may write one table at once, whatever the number of workers.

Each import holds one of `BULKFLOW_MAX_IMPORTS_PER_RESOURCE` (default 1) write slots of its
table while it loads: PostgreSQL advisory locks, in the very database the rows go to, held
by a session of the import's own. An import that finds every slot taken waits for one (and
logs that it waits); it does not fail. When the process holding a slot dies (`kill -9`, a
lost worker), its session ends with it and PostgreSQL frees the slot at once, so a re-run
never waits behind a dead run.

Invariant: a chunk commits only while its import holds a slot. The slot's session can be
lost while the import lives (PostgreSQL restarted, a connection cut): a watchdog thread
notices within `POLL_S`, reconnects and takes a slot again (waiting, as at the start, if
another import took it meanwhile). Every chunk transaction checks, before it commits, that
a session named after the import's slot holds a slot (`slot_held_sql`); when none does it
fails as retryable, and the chunk step's retry commits it once the slot is back.

Imports that one process runs at once (a landing pick-up's small files) also take turns
(`TableTurn`): each does its table work (staging with its drift check, the write slot, the
chunks) once the imports before it ended theirs, so they write the table in landing order,
while Prefect's bookkeeping of the runs around that work overlaps.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field

from bulkflow.db import (
    Connection,
    Cursor,
    close_quietly,
    end_session,
    fetch_one,
    open_session,
    open_session_ahead,
    translated,
)
from bulkflow.errors import RetryableError, is_retryable
from bulkflow.settings import Settings

POLL_S = 1.0
Log = Callable[[str], None]


def lock_key(resource: str) -> int:
    """The advisory lock space of a table's write slots (a stable 31-bit number)."""
    return int.from_bytes(hashlib.sha256(f"bulkflow-import:{resource}".encode()).digest()[:4], "big") >> 1


@dataclass(frozen=True)
class SlotClaim:
    """What a chunk transaction checks: that a session called `holder` holds a write slot
    of the table (lock space `key`)."""

    key: int
    holder: str


def slot_held_sql() -> str:
    """`$1` lock space, `$2` holder name: true while a session so named holds a slot."""
    return (
        "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::bigint = $1 "
        "AND a.application_name = $2)"
    )


def slot_held(cur: Cursor, claim: SlotClaim) -> bool:
    """True while a session named `claim.holder` holds a write slot of the table."""
    cur.execute(slot_held_sql(), parameters=(claim.key, claim.holder))
    return bool(fetch_one(cur)[0])


def check_slot_held(cur: Cursor, claim: SlotClaim | None, what: str) -> None:
    """RetryableError unless the import still holds its write slot (None: no slot asked)."""
    if claim is not None and not slot_held(cur, claim):
        raise RetryableError(
            f"{what}: the import's write slot was lost (PostgreSQL restarted?); retrying once it is back"
        )


class WriteSlot:
    """One write slot of a table, held on a session of its own and taken again whenever
    that session is lost, until `release`."""

    def __init__(self, settings: Settings, resource: str, on_wait: Log | None) -> None:
        self.settings, self.resource, self.on_wait = settings, resource, on_wait
        self.claim = SlotClaim(lock_key(resource), f"bulkflow-slot-{uuid.uuid4().hex[:16]}")
        self.slot = -1
        self._conn: Connection | None = None
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name=f"write-slot-{resource}", daemon=True)

    def take(self) -> WriteSlot:
        """Wait for a slot, then keep it held."""
        self._acquire(first=True)
        self._watchdog.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._watchdog.is_alive():
            self._watchdog.join(timeout=30)
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            with translated(), conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock($1::int, $2::int)", parameters=(self.claim.key, self.slot))
        except Exception as lost:  # noqa: BLE001 - a session already gone has freed its slot with it
            close_quietly(conn)
            if not is_retryable(lost):
                raise
            return
        end_session(self.settings, conn)

    def _acquire(self, *, first: bool) -> None:
        conn = open_session(self.settings, self.claim.holder)  # named for the chunks' check
        try:
            with translated():
                self.slot = _wait_for_slot(
                    conn,
                    self.claim.key,
                    self.settings.max_imports_per_resource,
                    self.resource,
                    self.on_wait if first else None,
                    self._stop,
                )
        except BaseException:
            close_quietly(conn)
            raise
        self._conn = conn

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            if self._holds():
                continue
            if self.on_wait is not None:
                self.on_wait(f"the write slot of {self.resource} was lost with its session: taking one again")
            self._retake()

    def _holds(self) -> bool:
        try:
            assert self._conn is not None
            with translated(), self._conn.cursor() as cur:
                return slot_held(cur, self.claim)
        except Exception as lost:  # noqa: BLE001 - any failure of the session is a lost slot
            if not is_retryable(lost):
                raise
            return False

    def _retake(self) -> None:
        if self._conn is not None:
            close_quietly(self._conn)
            self._conn = None
        while not self._stop.is_set():
            try:
                self._acquire(first=False)
                return
            except Exception as away:  # noqa: BLE001 - the server is still down: try again
                if not is_retryable(away):
                    raise
                self._stop.wait(POLL_S)


def _wait_for_slot(
    conn: Connection, key: int, slots: int, resource: str, on_wait: Log | None, stop: threading.Event
) -> int:
    waited = False
    while True:
        with conn.cursor() as cur:
            for slot in range(slots):
                cur.execute("SELECT pg_try_advisory_lock($1::int, $2::int)", parameters=(key, slot))
                if fetch_one(cur)[0]:
                    return slot
        if on_wait is not None and not waited:
            on_wait(f"every write slot of {resource} is taken ({slots}): waiting for one")
        waited = True
        if stop.wait(POLL_S):
            raise RetryableError(f"stopped waiting for a write slot of {resource}")


def prepare_table_slot(settings: Settings) -> None:
    """Begin connecting the session the next `table_slot` holds its slot on, so that it
    connects while the import stages its file instead of after."""
    open_session_ahead(settings)


@contextmanager
def table_slot(settings: Settings, resource: str, on_wait: Log | None = None) -> Iterator[SlotClaim]:
    """Hold one of the write slots of `resource`'s table for the block (waiting for one),
    taken again should its session be lost; yields what chunk transactions check."""
    slot = WriteSlot(settings, resource, on_wait).take()
    try:
        yield slot.claim
    finally:
        slot.release()


@dataclass(frozen=True)
class TableTurn:
    """One import's place among imports of one table that a process runs at once."""

    after: tuple[threading.Event, ...] = ()
    """The ends of the turns before this one."""
    done: threading.Event = field(default_factory=threading.Event)

    @contextmanager
    def taken(self) -> Iterator[None]:
        """The block runs once every turn before this one ended; this one ends with it."""
        for earlier in self.after:
            earlier.wait()
        try:
            yield
        finally:
            self.done.set()


def turns_of(batch_sizes: list[int]) -> list[TableTurn]:
    """The turns of batches of imports of one table, in order: the imports of a batch may
    work on the table at once, once every import of the batch before ended its turn."""
    turns: list[TableTurn] = []
    before: tuple[threading.Event, ...] = ()
    for size in batch_sizes:
        batch = [TableTurn(before) for _ in range(size)]
        turns += batch
        before = tuple(turn.done for turn in batch)
    return turns


_TURN: ContextVar[TableTurn | None] = ContextVar("bulkflow_table_turn", default=None)


@contextmanager
def imports_take(turn: TableTurn) -> Iterator[None]:
    """An import started in the block does its table work in `turn` (`table_work`); the turn
    ends with the block at the latest (an import that failed before its table work)."""
    token = _TURN.set(turn)
    try:
        yield
    finally:
        _TURN.reset(token)
        turn.done.set()


def table_work() -> AbstractContextManager[None]:
    """The block is an import's table work: in its turn when it was given one
    (`imports_take`), at once otherwise."""
    turn = _TURN.get()
    return nullcontext() if turn is None else turn.taken()
