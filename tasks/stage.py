"""Staging a source, as a Prefect task: fetched, decompressed and checked (`files/staging.py`),
its columns checked against the resource's (`files/columns.py`)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

from bulkflow.settings import Settings
from files.columns import check_columns, read_columns
from files.formats import display_name
from files.staging import StagedSource, stage_source
from schemas.parameters import Format
from schemas.resource import Resource


def _stage_name() -> str:
    return f"stage-{display_name(str(task_run.parameters['source']))}"


@task(name="stage-source", task_run_name=_stage_name, cache_policy=NO_CACHE, persist_result=False)
def stage(resource: Resource, source: str, format: Format | None, settings: Settings) -> StagedSource:
    """Fetch/decompress/check the source and verify its columns (InputError saying what to
    fix); a column the resource lacks is logged and ignored."""
    staged = stage_source(source, format, settings=settings)
    try:
        unknown = check_columns(resource, source, read_columns(staged, settings.max_record_bytes))
        if unknown:
            get_run_logger().warning("ignoring columns %s not in %s", ", ".join(unknown), resource.name)
        return staged
    except BaseException:
        staged.cleanup()
        raise
