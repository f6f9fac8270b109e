"""The commands that run or set up services: serve, deploy, watch, the API, the benchmark,
automations and the database.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from bulkflow.errors import TerminalError
from bulkflow.settings import Settings
from cli.data import REPOSITORY
from cli.output import errors_as_exit, stderr
from cli.startup import modules_loaded


def serve_command() -> None:
    """Serve the deployments and watch the landing folder (needs PREFECT_API_URL).

    Serves the import, export, nightly and landing deployments against PREFECT_API_URL and
    watches the landing storage: a pick-up run starts only when files wait."""
    from prefect import serve

    from deployments.catalog import all_deployments, registered_owners
    from deployments.landing_watch import watch
    from tasks.prefect_defaults import prompt_runner

    modules_loaded()
    with errors_as_exit():
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
        with prompt_runner():
            serve(*deployments)
    finally:
        stop.set()


def _announce_landing(settings: Settings) -> None:
    """Create the landing folders and say where they are and how often they are looked at."""
    from tasks.landing import prepare_landing

    folders = prepare_landing(settings)
    stderr.print(
        f"landing: {settings.landing_root()} (looked at every {settings.landing_interval_s} s; Ctrl-C stops)",
        highlight=False,
        soft_wrap=True,
    )
    for folder in folders:
        stderr.print(f"  drop {folder.rsplit('/', 1)[-1]} files in {folder}/", highlight=False, soft_wrap=True)


def deploy_command() -> None:
    """Register the deployments on the `bulkflow` work pool, for workers.

    `prefect deploy --all` on the catalog written as a prefect.yaml (schedules from .env and
    the environment); the process work pool is created if missing. Then start workers:
    `prefect worker start --pool bulkflow`, on machines with the code at the same path."""
    import subprocess
    import tempfile

    import yaml
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from deployments.catalog import WORK_POOL, all_deployments, prefect_yaml, registered_owners

    with errors_as_exit():
        settings = Settings()
        served = [name for name, pool in registered_owners(all_deployments(settings)).items() if not pool]
        if served:
            raise TerminalError(
                f"deployment(s) {', '.join(served)} are served by `bulkflow serve`: deploying them to a work pool "
                f"would take them from it. Stop it and delete them first (`prefect deployment delete {served[0]}`)"
            )
        with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process"))
    with tempfile.TemporaryDirectory() as folder:
        declared = Path(folder) / "prefect.yaml"
        declared.write_text(yaml.safe_dump(prefect_yaml(settings, REPOSITORY), sort_keys=False))
        deployed = subprocess.run(
            [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file", str(declared)],
            cwd=REPOSITORY,  # the entrypoints are paths in the repository
            check=False,
        )
    raise typer.Exit(deployed.returncode)


def watch_command() -> None:
    """Watch the landing folder alone, next to work-pool workers.

    Starts a landing pick-up whenever files wait under BULKFLOW_LANDING_URL, looking every
    BULKFLOW_LANDING_INTERVAL seconds. `bulkflow serve` does this itself."""
    from deployments.landing_watch import watch

    modules_loaded()
    with errors_as_exit():
        settings = Settings()
        _announce_landing(settings)
    with contextlib.suppress(KeyboardInterrupt):
        watch(settings, threading.Event())


def api_command(
    port: Annotated[Optional[int], typer.Option("--port", help="default: PORT (3000)")] = None,
    host: Annotated[str, typer.Option("--host", help="0.0.0.0 to listen on every interface")] = "127.0.0.1",
) -> None:
    """Serve the /v1 HTTP API (Swagger UI at /ui, Prometheus metrics at /metrics)."""
    import uvicorn

    from api.app import create_app

    modules_loaded()
    with errors_as_exit():
        settings = Settings()
        app = create_app(settings)
    uvicorn.run(app, host=host, port=port or settings.port, log_level="info")


def bench_command(
    rows: Annotated[int, typer.Option("--rows", min=100, help="rows of users, articles and comments each")] = 1_000_000,
    repeats: Annotated[int, typer.Option("--repeats", min=1)] = 3,
    memory_rows: Annotated[
        str, typer.Option("--memory-rows", help="users import sizes for peak memory")
    ] = "10000,100000,1000000,10000000",
    workdir: Annotated[Path, typer.Option("--workdir", help="generated files, the bench database")] = Path(
        ".bulkflow-bench"
    ),
    results: Annotated[Path, typer.Option("--results", help="where results.json/.md and chart.png go")] = Path(
        "bench/results"
    ),
    prefect_api_url: Annotated[
        Optional[str],
        typer.Option(
            "--prefect-api-url",
            envvar="BULKFLOW_BENCH_PREFECT_API_URL",
            help="a running Prefect API (default: start one)",
        ),
    ] = None,
    prefect_database_url: Annotated[
        Optional[str],
        typer.Option(
            "--prefect-database-url",
            envvar="BULKFLOW_BENCH_PREFECT_DATABASE_URL",
            help="the database of the Prefect server it starts, e.g. postgresql+asyncpg://... (default: SQLite)",
        ),
    ] = None,
) -> None:
    """Benchmark imports and exports against PostgreSQL's own COPY (own database, own Prefect server)."""
    from bench.comparison import BenchConfig
    from bench.report import write
    from bench.run import run

    modules_loaded()
    config = BenchConfig(
        rows=rows,
        repeats=repeats,
        memory_rows=tuple(int(n) for n in memory_rows.split(",")),
        workdir=workdir,
        results=results,
        prefect_api_url=prefect_api_url,
        prefect_database_url=prefect_database_url,
    )
    workdir.mkdir(parents=True, exist_ok=True)
    summary = write(config, run(config))
    typer.echo((results / "results.md").read_text())
    if not summary["chart"]:
        stderr.print("no chart: install the bench extra (pip install -e '.[bench]') for matplotlib", markup=False)


def automations_install_command() -> None:
    """Create the example automations on PREFECT_API_URL.

    Marks silent runs Crashed, and pauses the landing pick-up when an import's error rate is
    above BULKFLOW_ERROR_RATE_ALERT."""
    from deployments.automations import install

    with errors_as_exit():
        for name in install():
            stderr.print(f"automation {name} installed", highlight=False)


def migrate_command() -> None:
    """Apply the pending schema migrations (each once; safe to run from several processes)."""
    from bulkflow.db import connect, database_url, migrate, redacted_url, refuse_drift
    from schemas import declared_tables

    with errors_as_exit():
        settings = Settings()
        with connect(settings, migrate=False) as conn:
            applied = migrate(conn)
            refuse_drift(conn, declared_tables())
        for migration_id in applied:
            stderr.print(f"applied {migration_id}", highlight=False)
        stderr.print(f"schema is up to date on {redacted_url(database_url(settings))}", highlight=False)


def status_command() -> None:
    """The schema version, the pending migrations, and any drift from the declared resources.

    Drift (what the tables lack of the resources' declarations) is listed once migrated."""
    from bulkflow.db import connect, database_url, drift, migration_status, redacted_url, table_columns
    from schemas import declared_tables

    with errors_as_exit():
        settings = Settings()
        declared = declared_tables()
        with connect(settings, migrate=False) as conn:
            status = migration_status(conn)
            problems = drift(declared, table_columns(conn, list(declared))) if not status.pending else []
    typer.echo(f"database: {redacted_url(database_url(settings))}")
    typer.echo(f"version:  {status.version or 'none (never migrated)'}")
    typer.echo(f"applied:  {len(status.applied)} migrations")
    if not status.pending:
        typer.echo("pending:  none")
    for migration in status.pending:
        typer.echo(f"pending:  {migration.id}  {migration.description}")
    for problem in problems:
        typer.echo(f"drift:    {problem} (no migration covers it)")


def stop_command() -> None:
    """Stop the embedded PostgreSQL server (it restarts on next use)."""
    from bulkflow.db import stop_embedded

    with errors_as_exit():
        stopped = stop_embedded(Settings())
    stderr.print("embedded PostgreSQL stopped" if stopped else "no embedded PostgreSQL to stop")
