"""What the command line shows: one `error:` line and an exit code for every failure, live
progress on stderr, the import report.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bulkflow.console import prefect_console_handlers
from bulkflow.errors import InputError, TerminalError, first_line, is_retryable
from schemas.reports import ImportReport

if TYPE_CHECKING:  # Prefect is imported by the import command only
    from prefect.events.worker import EventsWorker

stderr = Console(stderr=True)


EXIT_TERMINAL = 2


EXIT_FAILED = 1


MAX_MESSAGE = 500


ErrorKind = Literal["input", "parameters", "environment", "bug"]


class errors_as_exit:
    """Turn errors into one line on stderr and an exit code: 1 for the environment (a
    retryable failure, such as the database unreachable after retries), 2 for everything
    else (the input, the parameters, or an unexpected error, named as such). Never a
    traceback on the console (the Prefect API keeps the full log). With `json_report`,
    stdout also gets the failure as the command's one JSON object."""

    def __init__(self, json_report: bool = False) -> None:
        self.json_report = json_report
        self.flow_run_id: str | None = None
        """The run the error happened in, once one exists."""

    def __enter__(self) -> errors_as_exit:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is None or isinstance(exc, (typer.Exit, KeyboardInterrupt, SystemExit)):
            return False
        kind = _kind_of(exc)
        code = EXIT_FAILED if kind == "environment" else EXIT_TERMINAL
        message = first_line(exc, limit=MAX_MESSAGE)
        if kind == "bug":
            message = f"unexpected {type(exc).__name__}: {message} (a bug in bulkflow: please report it)"
        message = message[:MAX_MESSAGE]
        stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        if self.json_report:
            failed = {
                "status": "failed",
                "error": message,
                "kind": kind,
                "exit_code": code,
                "flow_run_id": self.flow_run_id,
            }
            typer.echo(json.dumps(failed))
        raise typer.Exit(code)


def _kind_of(exc: BaseException) -> ErrorKind:
    """What the user has to look at: the file, the parameters, the environment, or our code."""
    if is_retryable(exc):
        return "environment"
    if isinstance(exc, InputError):
        return "input"
    if isinstance(exc, TerminalError) or _is_parameter_error(exc):
        return "parameters"
    return "bug"


def _is_parameter_error(exc: BaseException) -> bool:
    """Prefect rejects flow parameters (e.g. an unknown resource) before the flow starts."""
    from prefect.exceptions import ParameterTypeError, SignatureMismatchError
    from pydantic import ValidationError

    return isinstance(exc, (ParameterTypeError, SignatureMismatchError, ValidationError))


@contextmanager
def _live_progress(enabled: bool, *columns: Any, total: float | None) -> Iterator[Callable[..., None] | None]:
    """A rich progress display on stderr (only when enabled); yields its update function."""
    if not enabled:
        yield None
        return
    from rich.progress import Progress

    progress = Progress(*columns, console=stderr)
    task_id = progress.add_task("", total=total, rows=0, of="", rate="")
    progress.start()
    try:
        with _logs_above(progress.console):
            yield lambda **values: progress.update(task_id, **values)
    finally:
        progress.stop()


@contextmanager
def _logs_above(console: Console) -> Iterator[None]:
    """Print Prefect's console log lines through the live display's own console, so they
    appear above the bar instead of inside it."""
    swapped = [(handler, handler.console) for handler in prefect_console_handlers()]
    for handler, _ in swapped:
        handler.console = console
    try:
        yield
    finally:
        for handler, original in swapped:
            handler.console = original


@contextmanager
def progress_bar(enabled: bool) -> Iterator[None]:
    """The import's bar: how far the file is (committed chunks whole, chunks read or checked
    in part, so a file of one chunk moves too), rows done of the total (estimated from the
    bytes read), rows/s, elapsed and remaining time."""
    from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from tasks.report import add_progress_listener

    columns = (
        TextColumn("importing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,}{task.fields[of]} rows"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    started = time.monotonic()

    def show(rows: int, fraction: float, position: float) -> None:
        assert update is not None
        elapsed = max(time.monotonic() - started, 1e-6)
        estimate = f" of ~{int(rows / fraction):,}" if 0 < fraction < 1 else ""
        update(completed=position, rows=rows, of=estimate, rate=f"{rows / elapsed:,.0f} rows/s")

    with _live_progress(enabled, *columns, total=1.0) as update:
        if update is None:
            yield
            return
        remove = add_progress_listener(show)
        try:
            yield
        finally:
            remove()


@contextmanager
def row_counter(enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A live row count while an export runs; yields the row-count callback."""
    from rich.progress import SpinnerColumn, TextColumn

    with _live_progress(
        enabled, SpinnerColumn(), TextColumn("exporting {task.completed:,} rows"), total=None
    ) as update:
        yield None if update is None else (lambda rows: update(completed=rows))


def print_report(report: ImportReport) -> None:
    """What this run did; the job's totals too when earlier runs had committed part of it."""
    title = f"import {report.resource} from {report.source_name}"
    if report.mode != "upsert":
        title += f" (--mode {report.mode})"
    if report.dry_run:
        title = f"dry run (nothing written): {title}"
    table = Table(title=title, show_header=False)
    for key in ("status", "rows_read", "inserted", "updated", "unchanged", "rejected", "error_rate"):
        table.add_row(key, str(getattr(report, key)))
    for rule, count in report.rejects_by_rule.items():
        table.add_row(f"  rejects: {rule}", str(count))
    for label, text in report.reading.notes():
        table.add_row(f"read: {label}", text)
    if report.mode == "replace":
        table.add_row("deleted", f"{report.deleted} rows not in the file")
    for dependent, count in report.deleted_dependents.items():
        table.add_row(f"  deleted from {dependent}", f"{count} rows that referenced them")
    if report.budget_exceeded:
        table.add_row("budget", report.budget_exceeded)
    if report.already_committed:
        by = ", ".join(report.already_committed_by) or "an earlier run"
        table.add_row(
            "already committed",
            f"{report.already_committed} rows in {report.chunks_skipped} chunk(s), by {by}: not written again",
        )
    for key in ("chunks", "duration_s", "rows_per_s", "job_key", "flow_run_id"):
        table.add_row(key, str(getattr(report, key)))
    job = report.job
    if report.already_committed:
        table.add_row(
            "job totals",
            f"{job.rows_read} rows read, {job.inserted} inserted, {job.updated} updated, "
            + (f"{job.unchanged} unchanged, " if job.unchanged else "")
            + f"{job.rejected} rejected",
        )
    console = Console()
    console.print(table)
    if job.rejected:
        console.print(
            f"all rejects: bulkflow rejects {report.rejects_handle} -o rejects.ndjson", highlight=False, soft_wrap=True
        )


def send_pending_events_at_exit(within_s: float = 5.0) -> None:
    """Have each Prefect events worker's queue sent at the process's exit, before the
    worker's own exit call stops it: stopped with items still queued, it warns "Still
    processing items" on the console (a run that ends within a second ends before its
    events are sent). Waits at most `within_s` a worker: the API may be away, and the
    worker's exit call then tries once more. At exit, not after each run: a process that
    imports many times (the test suite, through CliRunner) waits once. Nothing to do when
    Prefect is not imported (an export imports none of it)."""
    if "prefect.events.worker" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker

    with EventsWorker._instance_lock:  # Prefect's task runner flushes a subprocess's workers so
        services = list(EventsWorker._instances.values())  # type: ignore[misc]  # a class-level registry
    # The registry holds every queue service, the log worker too, which holds its last
    # items until it is stopped (its queue never looks empty before): events only.
    for worker in services:
        if isinstance(worker, EventsWorker) and worker not in _workers_waited_for:
            _workers_waited_for.add(worker)
            # Prefect stops its workers from threading's exit calls, which run before the
            # atexit handlers and last registered first: registered after the worker
            # started, this wait runs before it is stopped.
            threading._register_atexit(_wait_until_sent, worker, within_s)  # type: ignore[attr-defined]


_workers_waited_for: weakref.WeakSet[EventsWorker] = weakref.WeakSet()


def _wait_until_sent(worker: EventsWorker, within_s: float) -> None:
    waiting = threading.Thread(target=worker.wait_until_empty, name="send-events", daemon=True)
    waiting.start()
    waiting.join(within_s)
