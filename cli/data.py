"""The commands that move data: import, export, rejects, the demo and the sample generator."""

from __future__ import annotations

import errno
import os
import sys
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from bulkflow.console import quiet_tracebacks
from bulkflow.settings import Settings
from cli.output import errors_as_exit, print_report, progress_bar, row_counter, send_pending_events_at_exit, stderr
from cli.startup import modules_loaded
from decisions.partitions import PARTITION_BY_HELP
from schemas.parameters import ImportOptions, OnBudget, OnDrift, WriteMode
from schemas.reports import ImportReport
from schemas.resource import RuleContext

if TYPE_CHECKING:
    from decisions.exports import ExportRequest
    from schemas.reports import ExportManifest
    from tasks.export import ExportStats

REPOSITORY = Path(__file__).resolve().parent.parent
"""Where the flows and the sample data are (the package is installed from the repository)."""


SAMPLE_DIR = REPOSITORY / "data"


DEMO_FILES = (("users", "users.csv"), ("articles", "articles.ndjson"), ("comments", "comments.ndjson"))


def _option(field: str) -> Any:
    """The `bulkflow import` option of an `ImportOptions` field: `--field-name`, helped by
    the field's own description (one definition for the CLI, the forms and the API)."""
    return typer.Option("--" + field.replace("_", "-"), help=ImportOptions.model_fields[field].description)


def _default(field: str) -> Any:
    return ImportOptions.model_fields[field].default


def import_command(
    resource: Annotated[str, typer.Argument(help="users, articles or comments")],
    source: Annotated[
        str, typer.Argument(help="path or URL of a CSV/NDJSON/JSON/Parquet file (.gz too); none with --rejects-of")
    ] = "",
    format: Annotated[Optional[str], typer.Option("--format", "-f", help="csv, ndjson, json, parquet")] = None,
    chunk_size: Annotated[Optional[int], _option("chunk_size")] = None,
    idempotency_key: Annotated[Optional[str], _option("idempotency_key")] = None,
    mode: Annotated[WriteMode, _option("mode")] = _default("mode"),
    dry_run: Annotated[bool, _option("dry_run")] = False,
    atomic: Annotated[bool, _option("atomic")] = False,
    cascade: Annotated[bool, _option("cascade")] = False,
    rejects_of: Annotated[Optional[str], _option("rejects_of")] = None,
    max_rejects: Annotated[Optional[int], _option("max_rejects")] = None,
    max_reject_rate: Annotated[Optional[float], _option("max_reject_rate")] = None,
    budget_min_rows: Annotated[int, _option("budget_min_rows")] = _default("budget_min_rows"),
    on_budget: Annotated[OnBudget, _option("on_budget")] = _default("on_budget"),
    budget_pause_timeout: Annotated[int, _option("budget_pause_timeout")] = _default("budget_pause_timeout"),
    profile: Annotated[Optional[str], _option("profile")] = None,
    delimiter: Annotated[Optional[str], _option("delimiter")] = None,
    quote: Annotated[Optional[str], _option("quote")] = None,
    escape: Annotated[Optional[str], _option("escape")] = None,
    encoding: Annotated[Optional[str], _option("encoding")] = None,
    map: Annotated[Optional[str], _option("map")] = None,
    null_values: Annotated[Optional[str], _option("null_values")] = None,
    true_values: Annotated[Optional[str], _option("true_values")] = None,
    false_values: Annotated[Optional[str], _option("false_values")] = None,
    timestamp_format: Annotated[Optional[list[str]], _option("timestamp_format")] = None,
    timezone: Annotated[Optional[str], _option("timezone")] = None,
    on_drift: Annotated[Optional[OnDrift], _option("on_drift")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON report on stdout")] = False,
) -> None:
    """Import a file: every row inserted, updated, unchanged or rejected, exactly once."""
    given = locals()
    with errors_as_exit(as_json):
        options = _options({name: given[name] for name in ImportOptions.model_fields if given.get(name) is not None})
    report = run_import(resource, source, format, options, json_report=as_json)
    if as_json:
        typer.echo(report.model_dump_json())
    else:
        print_report(report)


def _options(given: dict[str, Any]) -> ImportOptions:
    """The import's options; ParameterError naming each option that cannot be used, as typed."""
    from pydantic import ValidationError

    from bulkflow.errors import ParameterError

    try:
        return ImportOptions.model_validate(given)
    except ValidationError as invalid:
        problems = []
        for error in invalid.errors():
            option = "--" + "-".join(str(part) for part in error["loc"][:1]).replace("_", "-")
            problems.append(f"{option} {error.get('input')!r}: {error['msg'].removeprefix('Value error, ')}")
        raise ParameterError("; ".join(problems)) from None


def export_command(
    resource: Annotated[str, typer.Argument(help="users, articles or comments")],
    format: Annotated[str, typer.Option("--format", "-f", help="ndjson, csv, json, parquet")] = "ndjson",
    output: Annotated[str, typer.Option("--output", "-o", help="file path, fsspec URL, or - for stdout")] = "-",
    where: Annotated[
        Optional[list[str]], typer.Option("--where", "-w", help="FIELD=VALUE, FIELD>=VALUE, FIELD<VALUE")
    ] = None,
    fields: Annotated[Optional[str], typer.Option("--fields", help="comma-separated fields to export")] = None,
    limit: Annotated[
        Optional[int], typer.Option("--limit", min=0, help="the most rows to export (the first by id)")
    ] = None,
    since: Annotated[
        Optional[str], typer.Option("--since", help="a cursor an earlier export printed: only what changed since")
    ] = None,
    cursor_file: Annotated[
        Optional[Path],
        typer.Option("--cursor-file", help="read --since from this file (none: a full export), write the next there"),
    ] = None,
    partition_by: Annotated[
        Optional[str],
        typer.Option("--partition-by", help=PARTITION_BY_HELP + ", in the directory -o"),
    ] = None,
) -> None:
    """Stream rows out of the database (ordered by id) to a file, a URL or stdout, and the next cursor to stderr.

    The cursor (`cursor: TOKEN`) is what to pass as --since next time."""
    from decisions.exports import parse_where, plan_export, refuse_one_stream

    with errors_as_exit():
        settings = Settings()
        chosen = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
        request = plan_export(
            resource,
            format,
            parse_where(where or []),
            chosen,
            context=RuleContext.of(settings),
            limit=limit,
            since=_starting_cursor(since, cursor_file, limit),
            partition_by=partition_by,
        )
        if output == "-":
            refuse_one_stream(request)
        stats: ExportStats | ExportManifest
        if request.partitioning is not None:
            stats = _export_dataset(request, output, settings)
        else:
            stats = _export_file(request, output, settings)
        if cursor_file is not None and stats.cursor is not None:
            _replace_text(cursor_file, stats.cursor + "\n")
    deleted = f", {stats.deleted:,} deleted" if request.since is not None else ""
    into = f" into {len(stats.files):,} files" if request.partitioning is not None else ""
    stderr.print(
        f"exported {stats.rows:,} {resource} rows{deleted}{into} ({stats.bytes:,} bytes) in {stats.duration_s:.2f}s "
        f"({stats.rows_per_s:,.0f} rows/s{f', over {stats.connections} connections' if stats.connections > 1 else ''})",
        highlight=False,
    )
    if stats.cursor is not None:
        stderr.print(f"cursor: {stats.cursor}", highlight=False, soft_wrap=True)


def _export_file(request: ExportRequest, output: str, settings: Settings) -> ExportStats:
    """Write the export to `output` (a file, a URL, - for stdout), its deletes beside it."""
    from decisions.exports import deletes_location
    from files.storage import open_file
    from tasks.export import open_export

    modules_loaded()
    with ExitStack() as files, open_export(request, settings) as export:
        deletes = None
        if request.deletes_apart:
            deletes = files.enter_context(
                open_file(settings, deletes_location(output, request.format), "wb", auto_mkdir=True)
            )
        with row_counter(enabled=output != "-" and stderr.is_terminal) as on_rows:
            if output != "-":
                with open_file(settings, output, "wb", auto_mkdir=True) as sink:
                    return export.write(sink, deletes=deletes, on_rows=on_rows)
            try:
                stats = export.write(sys.stdout.buffer, on_rows=on_rows)
                sys.stdout.buffer.flush()
            except OSError as closed:
                if not _is_broken_pipe(closed):
                    raise
                _reader_went_away()
            return stats


def _export_dataset(request: ExportRequest, output: str, settings: Settings) -> ExportManifest:
    """Write a partitioned export as a dataset in the directory `output` (new or empty, so
    that it holds this export's files only), its manifest and deletes beside it. An export
    that fails takes its files away again: no half dataset is left to be read as whole."""
    from bulkflow.errors import ParameterError
    from files.storage import holds_files, remove_tree
    from tasks.export_jobs import MANIFEST_SUFFIX, export_to_storage

    modules_loaded()
    if holds_files(settings, output):
        raise ParameterError(f"{output} already holds files: a dataset goes to a new or empty directory")
    try:
        with row_counter(enabled=stderr.is_terminal) as on_rows:
            manifest = export_to_storage(request, output, settings, on_rows=on_rows)
    except BaseException:
        remove_tree(settings, output)
        raise
    stderr.print(f"manifest: {output}{MANIFEST_SUFFIX}", highlight=False, soft_wrap=True)
    return manifest


def _starting_cursor(since: str | None, cursor_file: Path | None, limit: int | None) -> str | None:
    """The cursor to start from: --since, or what --cursor-file holds (no file yet: none, a
    full export). A cursor file needs every row (no --limit) to be carried forward."""
    from bulkflow.errors import ParameterError

    if cursor_file is None:
        return since
    if since is not None:
        raise ParameterError("give --since or --cursor-file, not both")
    if limit is not None:
        raise ParameterError("--cursor-file carries the cursor forward, which needs every row: leave out --limit")
    try:
        return cursor_file.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as unreadable:
        raise ParameterError(f"cannot read --cursor-file {cursor_file}: {unreadable.strerror}") from None


def _replace_text(path: Path, text: str) -> None:
    """Write `path` whole or not at all (a temporary file beside it, renamed over it): a
    killed export never leaves half a cursor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


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


def rejects_command(
    run: Annotated[str, typer.Argument(help="flow run id or job key of an import")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="file to write (default stdout)")] = None,
    as_source: Annotated[
        bool,
        typer.Option("--as-source", help="write the rejected records themselves, in the file's format with its header"),
    ] = False,
) -> None:
    """Write all rejects of an import as NDJSON, or the rejected records themselves (--as-source).

    NDJSON: one entry per line with line, field, rule, message, value and raw. With
    --as-source: the rejected records in the file's format with its header, to fix and send again."""
    from tasks.jobs import iter_rejects
    from tasks.replay import rejected_job, write_rejected

    modules_loaded()
    with errors_as_exit():
        settings = Settings()
        job_key = rejected_job(settings, run)
        if as_source:
            with open(output, "wb") if output else nullcontext(sys.stdout.buffer) as records:
                replayed = write_rejected(settings, job_key, records)
            what = f"{replayed.records:,} rejected records"
            if replayed.cut_short:
                what += f" ({replayed.cut_short:,} left out: the reject report keeps them cut short)"
        else:
            entries = 0
            with open(output, "w", encoding="utf-8") if output else nullcontext(sys.stdout) as sink:
                for batch in iter_rejects(settings, job_key):
                    sink.write(batch.write_ndjson())
                    entries += batch.height
            what = f"{entries:,} reject entries"
    if output:
        stderr.print(f"wrote {what} of {job_key} to {output}", highlight=False, soft_wrap=True)


def demo_command() -> None:
    """Import the sample users, articles and comments in order and print each report."""
    for resource, name in DEMO_FILES:
        report = run_import(resource, str(SAMPLE_DIR / name), None, ImportOptions())
        print_report(report)
    stderr.print(next_step(), highlight=False, soft_wrap=True)


def next_step() -> str:
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
    from files.generate import GeneratorSpec, write_file

    modules_loaded()
    with errors_as_exit():
        spec = GeneratorSpec(resource, rows, invalid_share, seed, users, articles)
        write_file(spec, output)
    stderr.print(f"wrote {rows:,} {resource} rows to {output}")


def run_import(
    resource: str,
    source: str,
    format: str | None,
    options: ImportOptions,
    *,
    json_report: bool = False,
) -> ImportReport:
    from prefect import tags

    from bulkflow.db import connect_ahead
    from files.formats import check_source
    from flows.import_flow import import_flow
    from schemas import get_resource
    from tasks.prefect_defaults import own_heartbeat_only
    from tasks.run_labels import run_tags

    modules_loaded()
    with errors_as_exit(json_report):  # fail fast, before a flow run exists, on what is cheap to check
        settings = Settings()  # the flow reads them again; a bad variable is named here, before a run exists
        get_resource(resource)
        if not options.rejects_of:
            check_source(source, format)
    # The run's first connection and its write slot's session (a dry run takes none)
    # connect while Prefect creates the run: the flow takes them from the process's pools.
    connect_ahead(settings, session=not options.dry_run)
    quiet_tracebacks()
    with errors_as_exit(json_report) as failure, progress_bar(enabled=not json_report and stderr.is_terminal):
        try:
            with tags(*run_tags(resource, via="cli")), own_heartbeat_only():
                state = import_flow(
                    resource=resource,
                    source=source,
                    format=format,
                    options=options,
                    return_state=True,
                )
        finally:
            send_pending_events_at_exit()
        failure.flow_run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
        result = state.result(raise_on_failure=False)
        if isinstance(result, BaseException):
            raise result
        return result
