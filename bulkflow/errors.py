"""Typed errors. The split between retryable and terminal drives Prefect retries."""

from __future__ import annotations

import sys

import adbc_driver_manager


class BulkflowError(Exception):
    """Base of every error bulkflow raises on purpose; its message is for the user, its
    fields for programs (what a retry, a report or an API response needs)."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        field: str | None = None,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.field = field
        self.sqlstate = sqlstate

    def facts(self) -> dict[str, object]:
        """The fields that are set, for logs and API error details."""
        facts = {"source": self.source, "line": self.line, "field": self.field, "sqlstate": self.sqlstate}
        return {k: v for k, v in facts.items() if v is not None}

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the fields when Prefect pickles the error into a task or flow run state.
        return (_rebuild, (type(self), self.message, self.facts()))


def _rebuild(cls: type[BulkflowError], message: str, facts: dict[str, object]) -> BulkflowError:
    return cls(message, **facts)  # type: ignore[arg-type]  # facts() holds exactly the keyword fields


class TerminalError(BulkflowError):
    """Retrying cannot help: the input or the parameters must be fixed first."""


class InputError(TerminalError):
    """The source is unusable: missing, unreadable, undecodable, wrong columns, bad format."""


class AbandonedImport(InputError):
    """An all-or-nothing import given up on before anything of it was applied: its job is
    set aside (its rejects kept), and the next import of the file starts afresh."""


class BudgetExceeded(AbandonedImport):
    """The file's rejects spent the import's error budget: nothing of it was applied."""


class ReplaceRefused(AbandonedImport):
    """`--mode replace` would delete rows other tables reference (and `--cascade` was not given)."""


class TooLargeError(InputError):
    """The source is larger than the configured limit (BULKFLOW_MAX_SOURCE_BYTES)."""


class ParameterError(TerminalError):
    """A parameter is invalid: unknown resource, bad chunk size, unknown format."""


class CursorExpired(ParameterError):
    """An incremental export's cursor cannot be honoured: older than the tombstones kept,
    or its table was truncated since. Only a full export can catch up."""


class RetryableError(BulkflowError):
    """A passing failure (database down, connection lost, serialization failure)."""


class InvariantError(BulkflowError):
    """A promise broke (inserted + updated + unchanged + rejected != rows read): a bug, never the input."""


class DatabaseError(BulkflowError):
    """PostgreSQL refused a statement for a reason a retry cannot cure (its SQLSTATE says
    which). Raised by `bulkflow.db` in place of the driver's error."""


class DatabaseUnavailable(DatabaseError, RetryableError):
    """PostgreSQL could not be reached, went away, or asked for a retry (serialization
    failure, deadlock, lock timeout, too many connections, shutting down)."""


class SchemaDriftError(TerminalError):
    """The tables do not match the declared resources, and no migration covers the change."""


def first_line(error: BaseException, limit: int = 500) -> str:
    """What an error says, on one line: the first line of its message, else its class name;
    at most `limit` characters (for `error:` lines, events, state messages)."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


# SQLSTATE classes that a retry can cure: connection exceptions, serialization failures and
# deadlocks, insufficient resources, operator intervention (e.g. admin shutdown), and a
# lock wait that timed out (lock_not_available).
_RETRYABLE_SQLSTATE_PREFIXES = ("08", "40", "53", "57P", "55P03")


def database_error(error: adbc_driver_manager.Error, context: str, *, reached: bool = True) -> DatabaseError:
    """The driver's `error` as a typed one, its SQLSTATE kept. Retryable when the server was
    not `reached`, when it answered with a transient condition, or when there is no SQLSTATE
    (the connection was lost before an answer)."""
    sqlstate = getattr(error, "sqlstate", None) or None
    transient = (
        not reached
        or (sqlstate is not None and str(sqlstate).startswith(_RETRYABLE_SQLSTATE_PREFIXES))
        or (sqlstate is None and isinstance(error, adbc_driver_manager.OperationalError))
    )
    kind = DatabaseUnavailable if transient else DatabaseError
    return kind(f"{context}: {error}", sqlstate=sqlstate)


def is_retryable(exc: BaseException) -> bool:
    """True for errors that a Prefect task retry may cure: `RetryableError`s (a database
    error is typed so where it is raised) and a store that did not answer."""
    if isinstance(exc, RetryableError):
        return True
    if isinstance(exc, BulkflowError):
        return False  # terminal, or an invariant broke: retrying repeats it
    return _is_network_failure(exc)


def _is_network_failure(exc: BaseException) -> bool:
    """A store that did not answer: the built-in connection errors and timeouts, and those of
    botocore (an s3:// store through s3fs), which derive from neither."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    botocore = sys.modules.get("botocore.exceptions")  # loaded only once an s3:// URL was used
    return botocore is not None and isinstance(exc, (botocore.ConnectionError, botocore.ReadTimeoutError))


def retry_condition(task: object, task_run: object, state: object) -> bool:
    """Prefect `retry_condition_fn`: retry only errors classified as retryable."""
    try:
        state.result()  # type: ignore[attr-defined]  # Prefect passes a State; the signature keeps it loose
    except Exception as exc:  # noqa: BLE001 - we classify whatever the task raised
        return is_retryable(exc)
    return False
