"""`bulkflow history`: what was loaded and exported, when, and how it went, read from
bulkflow's own tables (no Prefect import: it answers with Prefect's history pruned)."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional, get_args

import typer
from rich.console import Console
from rich.table import Table

from bulkflow.settings import Settings
from cli.output import errors_as_exit
from schemas.reports import HistoryStatus


def history_command(
    resource: Annotated[Optional[str], typer.Option("--resource", "-r", help="users, articles or comments")] = None,
    since: Annotated[
        Optional[str],
        typer.Option("--since", help="only loads started at or after this time (ISO 8601, UTC if no zone)"),
    ] = None,
    status: Annotated[Optional[str], typer.Option("--status", help=", ".join(get_args(HistoryStatus)))] = None,
    exports: Annotated[bool, typer.Option("--exports", help="the export jobs instead of the imports")] = False,
    limit: Annotated[int, typer.Option("--limit", help="the newest this many (at most 10,000)")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="a JSON array, the field names of `import --json`")] = False,
) -> None:
    """List every import (or export, with --exports), newest first."""
    from tasks.history import HistoryQuery, list_exports, list_imports

    with errors_as_exit():
        query = HistoryQuery.checked(resource, since, status, limit)
        settings = Settings()
        entries = list_exports(settings, query) if exports else list_imports(settings, query)
    if as_json:
        sys.stdout.write(json.dumps([entry.model_dump(mode="json") for entry in entries], indent=2) + "\n")
        return
    table = Table(title=f"{'exports' if exports else 'imports'}, newest first ({len(entries)})")
    columns = ("started_at", "resource", "status", "rows", "deleted", "format", "via", "job_id") if exports else (
        "started_at", "resource", "source_name", "status", "rows_read", "inserted", "updated", "unchanged", "rejected",
        "via", "flow_run_id",
    )  # fmt: skip
    for column in columns:
        table.add_column(column)
    for entry in entries:
        values = entry.model_dump(mode="json")
        table.add_row(*("" if values[c] is None else str(values[c]) for c in columns))
    Console(width=200).print(table)
