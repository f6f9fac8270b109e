"""Export cursors: where an incremental export starts, as a token a consumer passes back.

A cursor is the snapshot an export read (`pg_current_snapshot()`: the transactions that had
committed when it was taken), not a time. Every resource row carries the transaction that
last wrote it (`bulkflow_xid`, set by a column default and an update trigger), so the rows
changed since a cursor are exactly those whose transaction is not visible in its snapshot:
committed after it was taken, *or still running when it was taken*, whatever time the
transaction began. A timestamp with a lag window misses the second kind when a transaction
outlives the window; a snapshot does not.

A token is `c1.` and the URL-safe base64 of a small JSON object (resource, snapshot, the
time it was taken): opaque to consumers, checked strictly when read back.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bulkflow.errors import CursorExpired, ParameterError

_PREFIX = "c1."
_SNAPSHOT = re.compile(r"^\d{1,20}:\d{1,20}:(\d{1,20}(,\d{1,20})*)?$")
"""`pg_snapshot` text: xmin:xmax:xip,... (digits only, so it can be written into SQL as a literal)."""


@dataclass(frozen=True)
class Cursor:
    """The snapshot an export of `resource` read, taken at `taken_at` (the database's clock)."""

    resource: str
    snapshot: str
    taken_at: datetime

    def __post_init__(self) -> None:
        if not _SNAPSHOT.match(self.snapshot):
            raise ParameterError(f"not a snapshot: {self.snapshot!r}")
        if self.taken_at.tzinfo is None:
            raise ParameterError("a cursor's time needs its zone")

    @property
    def token(self) -> str:
        body = {"resource": self.resource, "snapshot": self.snapshot, "taken_at": self.taken_at.isoformat()}
        encoded = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()
        return _PREFIX + encoded.rstrip("=")

    @classmethod
    def read(cls, token: str, resource: str) -> Cursor:
        """The cursor of `token`, which must be one an export of `resource` gave; a
        ParameterError says what is wrong with it otherwise."""
        text = token.strip()
        try:
            if not text.startswith(_PREFIX):
                raise ValueError("no cursor prefix")
            encoded = text[len(_PREFIX) :]
            body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
            cursor = cls(str(body["resource"]), str(body["snapshot"]), datetime.fromisoformat(str(body["taken_at"])))
        except (ValueError, KeyError, TypeError, binascii.Error, ParameterError):
            raise ParameterError(
                f"cannot read the cursor {_shown(text)}: pass the token an earlier export printed (cursor: ...)"
            ) from None
        if cursor.resource != resource:
            raise ParameterError(f"that cursor is of an export of {cursor.resource}, not of {resource}")
        return cursor

    def refuse_if_older_than(self, now: datetime, days: int) -> None:
        """Refuse a cursor older than the tombstones kept (`days`): the deletes made since
        it was taken may be pruned, so an export from it could not say them all."""
        if now - self.taken_at > timedelta(days=days):
            raise CursorExpired(
                f"the cursor was taken {self.taken_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC, more than {days} days ago "
                "(BULKFLOW_TOMBSTONE_DAYS): deletes older than that are pruned. Do a full export (no --since)"
            )


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


@dataclass(frozen=True)
class KeptCursor:
    """A cursor an export keeps in the database under a name (the nightly deployment's),
    and when that name's last full export was taken."""

    token: str
    full_at: datetime


def starting_point(kept: KeptCursor | None, now: datetime, full_every_days: int) -> tuple[str | None, str]:
    """Where an export that keeps its cursor starts: (the cursor, or None for a full export;
    why, for its log). A full export when there is none yet, or when the last full one is
    `full_every_days` old: a consumer that lost track catches up within that many days."""
    if kept is None:
        return None, "a full export: no cursor is kept under this name yet"
    if now - kept.full_at >= timedelta(days=full_every_days):
        return None, f"a full export: the last one is {(now - kept.full_at).days} days old (BULKFLOW_FULL_EVERY_DAYS)"
    return kept.token, f"the changes since the cursor kept at the last run (full export of {kept.full_at:%Y-%m-%d})"
