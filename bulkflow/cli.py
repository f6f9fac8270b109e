"""`bulkflow` command line: runs the same flows locally (Prefect's ephemeral API when
PREFECT_API_URL is unset, the configured server otherwise)."""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bulkflow.console import prefect_console_handlers, quiet_tracebacks
from bulkflow.errors import InputError, TerminalError, first_line, is_retryable
from bulkflow.settings import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="The database: migrate, status, stop the embedded server.")
app.add_typer(db_app, name="db")
automations_app = typer.Typer(no_args_is_help=True, help="Example Prefect automations on bulkflow's events.")
app.add_typer(automations_app, name="automations")
stderr = Console(stderr=True)

REPOSITORY = Path(__file__).resolve().parent.parent
"""Where prefect.yaml and the sample data are (the package is installed from the repository)."""
SAMPLE_DIR = REPOSITORY / "data"
DEMO_FILES = (("users", "users.csv"), ("articles", "articles.ndjson"), ("comments", "comments.ndjson"))
EXIT_TERMINAL = 2
EXIT_FAILED = 1
MAX_MESSAGE = 500


@app.command("import")
def import_command(
    resource: Annotated[str, typer.Argument(help="users, articles or comments")],
    source: Annotated[str, typer.Argument(help="path or URL of a CSV/NDJSON/JSON/Parquet file (.gz too)")],
    format: Annotated[Optional[str], typer.Option("--format", "-f", help="csv, ndjson, json, parquet")] = None,
    chunk_size: Annotated[Optional[int], typer.Option("--chunk-size", min=1)] = None,
    idempotency_key: Annotated[Optional[str], typer.Option("--idempotency-key")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON report on stdout")] = False,
) -> None:
    """Import a file: every row inserted, updated or rejected, exactly once."""
    report = _run_import(resource, source, format, chunk_size, idempotency_key, json_report=as_json)
    if as_json:
        typer.echo(json.dumps(report, default=str))
    else:
        _print_report(report)


@app.command("export")
def export_command(
    resource: Annotated[str, typer.Argument(help="users, articles or comments")],
    format: Annotated[str, typer.Option("--format", "-f", help="ndjson, csv, json, parquet")] = "ndjson",
    output: Annotated[str, typer.Option("--output", "-o", help="file path, fsspec URL, or - for stdout")] = "-",
    where: Annotated[Optional[list[str]], typer.Option("--where", "-w", help="FIELD=VALUE, FIELD>=VALUE, FIELD<VALUE")] = None,
    fields: Annotated[Optional[str], typer.Option("--fields", help="comma-separated fields to export")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="the most rows to export (the first by id)")] = None,
) -> None:
    """Stream rows out of the database (ordered by id) to a file, a URL or stdout."""
    from tasks.export import parse_where, plan_export, stream_export
    from tasks.storage import open_file

    with _errors_as_exit():
        settings = Settings()
        chosen = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
        request = plan_export(
            resource, format, parse_where(where or []), chosen, context=settings.rule_context(), limit=limit
        )
        with _row_counter(enabled=output != "-" and stderr.is_terminal) as on_rows:
            if output == "-":
                try:
                    stats = stream_export(request, sys.stdout.buffer, settings=settings, on_rows=on_rows)
                    sys.stdout.buffer.flush()
                except OSError as closed:
                    if not _is_broken_pipe(closed):
                        raise
                    _reader_went_away()
            else:
                with open_file(settings, output, "wb", auto_mkdir=True) as sink:
                    stats = stream_export(request, sink, settings=settings, on_rows=on_rows)
    stderr.print(
        f"exported {stats.rows:,} {resource} rows ({stats.bytes:,} bytes) in {stats.duration_s:.2f}s "
        f"({stats.rows_per_s:,.0f} rows/s)",
        highlight=False,
    )


def _is_broken_pipe(error: OSError) -> bool:
    """Python's BrokenPipeError, or the plain OSError Arrow's and polars' writers raise for it."""
    return isinstance(error, BrokenPipeError) or error.errno == errno.EPIPE or "[Errno 32]" in str(error)


def _reader_went_away() -> None:
    """The reader of stdout closed it (`| head`): end quietly, as `cat` and `psql` do.
    stdout becomes /dev/null so that flushing it on exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    raise typer.Exit(0)


@app.command("rejects")
def rejects_command(
    run: Annotated[str, typer.Argument(help="flow run id or job key of an import")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="file to write (default stdout)")] = None,
) -> None:
    """Write all rejects of an import as NDJSON: line, field, rule, message, value, raw."""
    from tasks.jobs import find_job_key, iter_rejects

    with _errors_as_exit():
        settings = Settings()
        job_key = find_job_key(settings, run)
        if job_key is None:
            raise TerminalError(f"no import found for {run!r}: give a flow run id or a job key")
        sink = open(output, "w", encoding="utf-8") if output else sys.stdout
        entries = 0
        try:
            for batch in iter_rejects(settings, job_key):
                sink.write(batch.write_ndjson())
                entries += batch.height
        finally:
            if output:
                sink.close()
    if output:
        stderr.print(f"wrote {entries:,} reject entries of {job_key} to {output}", highlight=False, soft_wrap=True)


@app.command("serve")
def serve_command() -> None:
    """Serve the deployments and watch the landing folder (needs PREFECT_API_URL).

    Serves the import, export, nightly and landing deployments against PREFECT_API_URL and
    watches the landing storage: a pick-up run starts only when files wait."""
    from prefect import serve

    from deployments.catalog import all_deployments, registered_owners
    from deployments.landing_watch import watch

    with _errors_as_exit():
        settings = Settings()
        deployments = all_deployments(settings)
        claimed = [name for name, pool in registered_owners(deployments).items() if pool]
        if claimed:
            raise TerminalError(
                f"deployment(s) {', '.join(claimed)} belong to a work pool (`prefect deploy`): serving them here "
                "would leave its workers without pull steps. Run `prefect worker start --pool bulkflow` instead, "
                f"or delete them first (`prefect deployment delete {claimed[0]}`)"
            )
        _announce_landing(settings)
    stop = threading.Event()
    threading.Thread(target=watch, args=(settings, stop), name="landing-watch", daemon=True).start()
    try:
        serve(*deployments)
    finally:
        stop.set()


def _announce_landing(settings: Settings) -> None:
    """Create the landing folders and say where they are and how often they are looked at."""
    from tasks.landing import prepare_landing

    folders = prepare_landing(settings)
    stderr.print(f"landing: {settings.landing_root()} (looked at every {settings.landing_interval_s} s; "
                 "Ctrl-C stops)", highlight=False, soft_wrap=True)
    for folder in folders:
        stderr.print(f"  drop {folder.rsplit('/', 1)[-1]} files in {folder}/", highlight=False, soft_wrap=True)


@app.command("deploy")
def deploy_command() -> None:
    """Register the deployments on the `bulkflow` work pool, for workers.

    `prefect deploy --all` on prefect.yaml, with the schedule settings of .env and the
    environment filled in; the process work pool is created if missing. Then start workers:
    `prefect worker start --pool bulkflow`."""
    import subprocess

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from deployments.catalog import WORK_POOL, all_deployments, deploy_environment, registered_owners

    with _errors_as_exit():
        settings = Settings()
        served = [name for name, pool in registered_owners(all_deployments(settings)).items() if not pool]
        if served:
            raise TerminalError(
                f"deployment(s) {', '.join(served)} are served by `bulkflow serve`: deploying them to a work pool "
                f"would take them from it. Stop it and delete them first (`prefect deployment delete {served[0]}`)"
            )
        with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
    deployed = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        # prefect.yaml's pull step reads $PWD: the repository, wherever this was started from
        cwd=REPOSITORY, env={**os.environ, **deploy_environment(settings), "PWD": str(REPOSITORY)}, check=False,
    )
    raise typer.Exit(deployed.returncode)


@app.command("watch")
def watch_command() -> None:
    """Watch the landing folder alone, next to work-pool workers.

    Starts a landing pick-up whenever files wait under BULKFLOW_LANDING_URL, looking every
    BULKFLOW_LANDING_INTERVAL seconds. `bulkflow serve` does this itself."""
    from deployments.landing_watch import watch

    with _errors_as_exit():
        settings = Settings()
        _announce_landing(settings)
    with contextlib.suppress(KeyboardInterrupt):
        watch(settings, threading.Event())


@app.command("api")
def api_command(
    port: Annotated[Optional[int], typer.Option("--port", help="default: PORT (3000)")] = None,
    host: Annotated[str, typer.Option("--host", help="0.0.0.0 to listen on every interface")] = "127.0.0.1",
) -> None:
    """Serve the /v1 HTTP API (Swagger UI at /ui, Prometheus metrics at /metrics)."""
    import uvicorn

    from api.app import create_app

    with _errors_as_exit():
        settings = Settings()
        app = create_app(settings)
    uvicorn.run(app, host=host, port=port or settings.port, log_level="info")


@app.command("bench")
def bench_command(
    rows: Annotated[int, typer.Option("--rows", min=100, help="rows of users, articles and comments each")] = 1_000_000,
    repeats: Annotated[int, typer.Option("--repeats", min=1)] = 3,
    memory_rows: Annotated[str, typer.Option("--memory-rows", help="users import sizes for peak memory")] = "10000,100000,1000000,10000000",
    workdir: Annotated[Path, typer.Option("--workdir", help="generated files, the bench database")] = Path(".bulkflow-bench"),
    results: Annotated[Path, typer.Option("--results", help="where results.json/.md and chart.png go")] = Path("bench/results"),
    prefect_api_url: Annotated[
        Optional[str],
        typer.Option("--prefect-api-url", envvar="BULKFLOW_BENCH_PREFECT_API_URL", help="a running Prefect API (default: start one)"),
    ] = None,
) -> None:
    """Benchmark imports and exports against PostgreSQL's own COPY (own database, own Prefect server)."""
    from bench.report import write
    from bench.run import BenchConfig, run

    config = BenchConfig(
        rows=rows,
        repeats=repeats,
        memory_rows=tuple(int(n) for n in memory_rows.split(",")),
        workdir=workdir,
        results=results,
        prefect_api_url=prefect_api_url,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    summary = write(config, run(config))
    typer.echo((results / "results.md").read_text())
    if not summary["chart"]:
        stderr.print("no chart: install the bench extra (pip install -e '.[bench]') for matplotlib", markup=False)


@app.command("demo")
def demo_command() -> None:
    """Import the sample users, articles and comments in order and print each report."""
    for resource, name in DEMO_FILES:
        report = _run_import(resource, str(SAMPLE_DIR / name), None, None, None)
        _print_report(report)
    stderr.print(_next_step(), highlight=False, soft_wrap=True)


def _next_step() -> str:
    """Where to see the runs just made, or how to keep them next time."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if PREFECT_API_URL.value():
        ui = PREFECT_UI_URL.value() or PREFECT_API_URL.value().removesuffix("/api")
        return f"next: these runs, their logs and report artifacts are in the Prefect UI at {ui}/runs"
    return (
        "next: these runs went to a throwaway Prefect API. To see runs in the Prefect UI, start a server "
        "(`.venv/bin/prefect server start`), then in another shell `export PREFECT_API_URL=http://127.0.0.1:4200/api` "
        "and run `make demo` again: the runs, logs and report artifacts are at http://127.0.0.1:4200/runs"
    )


@app.command("generate")
def generate_command(
    resource: Annotated[str, typer.Argument(help="users, articles or comments")],
    output: Annotated[Path, typer.Argument(help="file to write; the format comes from its extension")],
    rows: Annotated[int, typer.Option("--rows", min=0)] = 10_000,
    invalid_share: Annotated[float, typer.Option("--invalid-share", min=0.0, max=1.0)] = 0.05,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    users: Annotated[int, typer.Option("--users", help="user ids to reference (articles, comments)")] = 1000,
    articles: Annotated[int, typer.Option("--articles", help="article ids to reference (comments)")] = 1000,
) -> None:
    """Write a synthetic file (valid rows plus a share of invalid ones) for tests and benchmarks."""
    from bulkflow.generate import GeneratorSpec, write_file

    with _errors_as_exit():
        spec = GeneratorSpec(resource, rows, invalid_share, seed, users, articles)
        write_file(spec, output)
    stderr.print(f"wrote {rows:,} {resource} rows to {output}")


@automations_app.command("install")
def automations_install_command() -> None:
    """Create the example automations on PREFECT_API_URL.

    Marks silent runs Crashed, and pauses the landing pick-up when an import's error rate is
    above BULKFLOW_ERROR_RATE_ALERT."""
    from deployments.automations import install

    with _errors_as_exit():
        for name in install():
            stderr.print(f"automation {name} installed", highlight=False)


@db_app.command("migrate")
def migrate_command() -> None:
    """Apply the pending schema migrations (each once; safe to run from several processes)."""
    from bulkflow.db import connect, database_url, migrate, redacted_url

    with _errors_as_exit():
        settings = Settings()
        with connect(settings, migrate=False) as conn:
            applied = migrate(conn)
        for migration_id in applied:
            stderr.print(f"applied {migration_id}", highlight=False)
        stderr.print(f"schema is up to date on {redacted_url(database_url(settings))}", highlight=False)


@db_app.command("status")
def status_command() -> None:
    """The schema version of the database, and the migrations still pending."""
    from bulkflow.db import connect, database_url, migration_status, redacted_url

    with _errors_as_exit():
        settings = Settings()
        with connect(settings, migrate=False) as conn:
            status = migration_status(conn)
    typer.echo(f"database: {redacted_url(database_url(settings))}")
    typer.echo(f"version:  {status.version or 'none (never migrated)'}")
    typer.echo(f"applied:  {len(status.applied)} migrations")
    if not status.pending:
        typer.echo("pending:  none")
    for migration in status.pending:
        typer.echo(f"pending:  {migration.id}  {migration.description}")


@db_app.command("stop")
def stop_command() -> None:
    """Stop the embedded PostgreSQL server (it restarts on next use)."""
    from bulkflow.db import stop_embedded

    with _errors_as_exit():
        stopped = stop_embedded(Settings())
    stderr.print("embedded PostgreSQL stopped" if stopped else "no embedded PostgreSQL to stop")


def _run_import(
    resource: str, source: str, format: str | None, chunk_size: int | None, key: str | None, *, json_report: bool = False
) -> dict[str, Any]:
    from prefect import tags

    from flows.import_flow import import_flow
    from schemas import get_resource
    from schemas.parameters import ImportOptions
    from tasks.run_labels import run_tags
    from tasks.source import check_source

    with _errors_as_exit(json_report):  # fail fast, before a flow run exists, on what is cheap to check
        Settings()  # the flow reads them again; a bad variable is named here, before a run exists
        get_resource(resource)
        check_source(source, format)
    quiet_tracebacks()
    with _errors_as_exit(json_report) as failure, _progress_bar(enabled=not json_report and stderr.is_terminal):
        with tags(*run_tags(resource, via="cli")):
            state = import_flow(
                resource=resource,
                source=source,
                format=format,
                options=ImportOptions(chunk_size=chunk_size, idempotency_key=key),
                return_state=True,
            )
        failure.flow_run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
        result = state.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            raise result
        return result


ErrorKind = Literal["input", "parameters", "environment", "bug"]


class _errors_as_exit:
    """Turn errors into one line on stderr and an exit code: 1 for the environment (a
    retryable failure, such as the database unreachable after retries), 2 for everything
    else (the input, the parameters, or an unexpected error, named as such). Never a
    traceback on the console (the Prefect API keeps the full log). With `json_report`,
    stdout also gets the failure as the command's one JSON object."""

    def __init__(self, json_report: bool = False) -> None:
        self.json_report = json_report
        self.flow_run_id: str | None = None
        """The run the error happened in, once one exists."""

    def __enter__(self) -> _errors_as_exit:
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
            failed = {"status": "failed", "error": message, "kind": kind, "exit_code": code, "flow_run_id": self.flow_run_id}
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
def _progress_bar(enabled: bool) -> Iterator[None]:
    """The import's bar: how far the file is (committed chunks whole, chunks read or checked
    in part, so a file of one chunk moves too), rows done of the total (estimated from the
    bytes read), rows/s, elapsed and remaining time."""
    from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from tasks.report import add_progress_listener

    columns = (TextColumn("importing"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rows]:,}{task.fields[of]} rows"), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
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
def _row_counter(enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A live row count while an export runs; yields the row-count callback."""
    from rich.progress import SpinnerColumn, TextColumn

    with _live_progress(enabled, SpinnerColumn(), TextColumn("exporting {task.completed:,} rows"), total=None) as update:
        yield None if update is None else (lambda rows: update(completed=rows))


def _print_report(report: dict[str, Any]) -> None:
    """What this run did; the job's totals too when earlier runs had committed part of it."""
    table = Table(title=f"import {report['resource']} from {report['source_name']}", show_header=False)
    for key in ("status", "rows_read", "inserted", "updated", "rejected", "error_rate"):
        table.add_row(key, str(report[key]))
    for rule, count in report["rejects_by_rule"].items():
        table.add_row(f"  rejects: {rule}", str(count))
    if report["already_committed"]:
        by = ", ".join(report["already_committed_by"]) or "an earlier run"
        table.add_row("already committed", f"{report['already_committed']} rows in {report['chunks_skipped']} "
                      f"chunk(s), by {by}: not written again")
    for key in ("chunks", "duration_s", "rows_per_s", "job_key", "flow_run_id"):
        table.add_row(key, str(report[key]))
    job = report["job"]
    if report["already_committed"]:
        table.add_row("job totals", f"{job['rows_read']} rows read, {job['inserted']} inserted, "
                      f"{job['updated']} updated, {job['rejected']} rejected")
    console = Console()
    console.print(table)
    if job["rejected"]:
        console.print(f"all rejects: bulkflow rejects {report['job_key']} -o rejects.ndjson", highlight=False, soft_wrap=True)


def main() -> None:
    """The `bulkflow` command. Once the command is done and every exit handler has run
    (Prefect's included: they send the last logs and events), the process ends without
    tearing the interpreter down, which with Prefect, pydantic and polars loaded takes about
    a second and changes nothing."""
    try:
        app()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
        if isinstance(exit_.code, str):
            stderr.print(exit_.code, highlight=False)
    atexit._run_exitfuncs()  # what the interpreter would run before its teardown
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
