"""Typed errors. The split between retryable and terminal drives Prefect retries."""

from __future__ import annotations


class BulkflowError(Exception):
    """Base of every error bulkflow raises on purpose; its message is for the user."""


class TerminalError(BulkflowError):
    """Retrying cannot help: the input or the parameters must be fixed first."""


class InputError(TerminalError):
    """The source is unusable: missing, unreadable, undecodable, wrong columns, bad format."""


class TooLargeError(InputError):
    """The source is larger than the configured limit (BULKFLOW_MAX_SOURCE_BYTES)."""


class ParameterError(TerminalError):
    """A parameter is invalid: unknown resource, bad chunk size, unknown format."""


class RetryableError(BulkflowError):
    """A passing failure (database down, connection lost, serialization failure)."""


# SQLSTATE classes that a retry can cure: connection exceptions, serialization failures and
# deadlocks, insufficient resources, operator intervention (e.g. admin shutdown), and a
# lock wait that timed out (lock_not_available).
_RETRYABLE_SQLSTATE_PREFIXES = ("08", "40", "53", "57P", "55P03")


def is_retryable(exc: BaseException) -> bool:
    """True for errors that a Prefect task retry may cure."""
    if isinstance(exc, RetryableError):
        return True
    if isinstance(exc, TerminalError):
        return False
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        # The server answered: only its transient conditions are worth a retry.
        return sqlstate.startswith(_RETRYABLE_SQLSTATE_PREFIXES)
    # No SQLSTATE from ADBC means the server was never reached (refused, lost, timed out).
    return type(exc).__name__ == "OperationalError"


def retry_condition(task: object, task_run: object, state: object) -> bool:
    """Prefect `retry_condition_fn`: retry only errors classified as retryable."""
    try:
        state.result()  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - we classify whatever the task raised
        return is_retryable(exc)
    return False
