"""How many imports may write one table at once, whatever the number of workers.

Each import holds one of `BULKFLOW_MAX_IMPORTS_PER_RESOURCE` (default 1) write slots of its
table while it loads: PostgreSQL advisory locks, in the very database the rows go to, held
by a session of the import's own. An import that finds every slot taken waits for one (and
logs that it waits); it does not fail. When the process holding a slot dies (`kill -9`, a
lost worker), its session ends with it and PostgreSQL frees the slot at once, so a re-run
never waits behind a dead run.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bulkflow.db import Connection, connect, fetch_one
from bulkflow.settings import Settings

POLL_S = 1.0


def lock_key(resource: str) -> int:
    """The advisory lock space of a table's write slots (a stable 31-bit number)."""
    return int.from_bytes(hashlib.sha256(f"bulkflow-import:{resource}".encode()).digest()[:4], "big") >> 1


@contextmanager
def table_slot(settings: Settings, resource: str, on_wait: Callable[[str], None] | None = None) -> Iterator[int]:
    """Hold one of the write slots of `resource`'s table for the block (waiting for one);
    yields the slot number."""
    slots = settings.max_imports_per_resource
    with connect(settings, migrate=False) as conn:
        conn.adbc_connection.set_autocommit(True)  # session-level locks, no transaction held open
        try:
            slot = _acquire(conn, lock_key(resource), slots, resource, on_wait)
            try:
                yield slot
            finally:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_unlock($1::int, $2::int)", parameters=(lock_key(resource), slot))
        finally:
            conn.adbc_connection.set_autocommit(False)


def _acquire(conn: Connection, key: int, slots: int, resource: str, on_wait: Callable[[str], None] | None) -> int:
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
        time.sleep(POLL_S)
