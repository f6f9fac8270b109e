"""What bulkflow's processes print on their console: Prefect's log lines without
tracebacks. The run's error is one line there (the CLI's `error:`, the run's final state on
`bulkflow serve`'s console); the Prefect API keeps the full log, tracebacks included."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.logging.handlers import PrefectConsoleHandler


class _WithoutTraceback(logging.Formatter):
    """Formats a copy of each record without its exception, so the record the other handlers
    (the API's) see keeps it."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(record.__dict__)
        bare.exc_info, bare.exc_text, bare.stack_info = None, None, None
        return self.inner.format(bare)


def prefect_console_handlers() -> list[PrefectConsoleHandler]:
    """Prefect's console log handlers, wherever its logging configuration put them."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)] + [logging.root]
    return [h for logger in loggers for h in getattr(logger, "handlers", []) if isinstance(h, PrefectConsoleHandler)]


def quiet_tracebacks() -> None:
    """Keep tracebacks off this process's console (once per handler)."""
    for handler in prefect_console_handlers():
        if not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter))
