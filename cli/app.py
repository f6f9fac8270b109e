"""`bulkflow` command line: runs the same flows locally (Prefect's ephemeral API when
PREFECT_API_URL is unset, the configured server otherwise)."""

from __future__ import annotations

import atexit
import os
import sys
import threading

import typer

from cli import data, history, profiles, services
from cli.output import stderr
from cli.startup import pause_collector

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="The database: migrate, status, stop the embedded server.")
app.add_typer(db_app, name="db")
automations_app = typer.Typer(no_args_is_help=True, help="Example Prefect automations on bulkflow's events.")
app.add_typer(automations_app, name="automations")
app.add_typer(profiles.app, name="profiles")
app.command("import")(data.import_command)
app.command("export")(data.export_command)
app.command("rejects")(data.rejects_command)
app.command("history")(history.history_command)
app.command("serve")(services.serve_command)
app.command("deploy")(services.deploy_command)
app.command("watch")(services.watch_command)
app.command("api")(services.api_command)
app.command("bench")(services.bench_command)
app.command("demo")(data.demo_command)
app.command("generate")(data.generate_command)
automations_app.command("install")(services.automations_install_command)
db_app.command("migrate")(services.migrate_command)
db_app.command("status")(services.status_command)
db_app.command("stop")(services.stop_command)


def main() -> None:
    """The `bulkflow` command. Once the command is done and every exit handler has run
    (Prefect's included: they send the last logs and events), the process ends without
    tearing the interpreter down, which with Prefect, pydantic and polars loaded takes about
    a second and changes nothing."""
    pause_collector()
    try:
        app()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
        if isinstance(exit_.code, str):
            stderr.print(exit_.code, highlight=False)
    # What the interpreter runs before its teardown: threading's exit calls (Prefect's
    # workers send what they hold and stop), the wait for non-daemon threads, atexit.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
