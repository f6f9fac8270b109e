"""Staging a source, as a Prefect task: fetched, decompressed, decoded and checked
(`files/staging.py`), its dialect resolved, its columns matched to the resource's fields
(`files/header.py`) and compared with the previous import's (drift)."""

from __future__ import annotations

from dataclasses import replace

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from bulkflow.errors import InputError
from bulkflow.settings import Settings
from files.columns import check_columns, read_columns
from files.formats import display_name
from files.header import ColumnMatch, match_columns
from files.staging import StagedSource, stage_source
from schemas.parameters import Format, ImportOptions
from schemas.reports import ColumnDrift, FileReading
from schemas.resource import Resource
from tasks import events
from tasks.jobs import previous_columns


def _stage_name() -> str:
    return f"stage-{display_name(str(task_run.parameters['source']))}"


@task(name="stage-source", task_run_name=_stage_name, cache_policy=NO_CACHE, persist_result=False)
def stage(
    resource: Resource, source: str, format: Format | None, options: ImportOptions, settings: Settings
) -> tuple[StagedSource, FileReading]:
    """Fetch/decompress/decode/check the source and match its columns (InputError saying
    what to fix): the staged file, and how it is read. A column no field takes is logged
    and ignored; a drift from the previous import's columns is reported (or, with
    `on_drift=block`, refused)."""
    staged, reading = read_plan(resource, source, format, options, settings)
    try:
        if reading.ignored_columns:
            get_run_logger().warning("ignoring columns %s not in %s", ", ".join(reading.ignored_columns), resource.name)
        return staged, _with_drift(settings, resource, display_name(source, options.given_name), reading, options)
    except BaseException:
        staged.cleanup()
        raise


def read_plan(
    resource: Resource, source: str, format: Format | None, options: ImportOptions, settings: Settings
) -> tuple[StagedSource, FileReading]:
    """The source staged, and how it is read (dialect, encoding, the columns' fields),
    without the database: what `bulkflow profiles check` shows."""
    staged = stage_source(
        source, format, settings=settings, reading=options, fits_header=lambda names: _fits(resource, names, options)
    )
    try:
        columns = read_columns(staged, settings.max_record_bytes)
        match = match_columns(resource, source, columns, options.map)
        unknown = check_columns(resource, source, list(match.read))
        staged = replace(staged, columns=match)
        return staged, _reading(staged, options, match, unknown)
    except BaseException:
        staged.cleanup()
        raise


def _fits(resource: Resource, names: list[str], options: ImportOptions) -> bool:
    """Whether a header split by a candidate delimiter names the resource's required columns."""
    try:
        read = match_columns(resource, "", names, options.map).read
    except InputError:
        return False
    return all(required in read for required in resource.required_columns)


def _reading(staged: StagedSource, options: ImportOptions, match: ColumnMatch, ignored: list[str]) -> FileReading:
    dialect = staged.dialect if staged.format == "csv" else None
    return FileReading(
        profile=options.profile,
        encoding=staged.encoding,
        delimiter=dialect.delimiter if dialect else None,
        delimiter_from=dialect.delimiter_from if dialect else None,
        quote=dialect.quote if dialect else None,
        escape=options.escape if dialect and options.escape_char != options.quote else None,
        columns=list(match.read),
        header_matches=list(match.matches),
        ignored_columns=ignored,
    )


def _with_drift(
    settings: Settings, resource: Resource, source_name: str, reading: FileReading, options: ImportOptions
) -> FileReading:
    previous = previous_columns(settings, resource.name, options.profile)
    drift = ColumnDrift.between(previous[0], previous[1], reading.columns) if previous else None
    if drift is None:
        return reading
    blocked = options.on_drift == "block"
    events.schema_drift(resource.name, source_name, drift, options.profile, blocked)
    if blocked:
        raise InputError(f"{source_name}: the file {drift.describe()} ({drift.previous_job}); nothing was written")
    get_run_logger().warning("column drift: %s %s (%s)", source_name, drift.describe(), drift.previous_job)
    return reading.model_copy(update={"drift": drift})
