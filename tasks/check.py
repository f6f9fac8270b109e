"""The database check of a chunk, as a Prefect task (threads runner; Dask: `on_workers`)."""

from __future__ import annotations

from prefect import task

from bulkflow.settings import Settings
from decisions.checks import CheckScope, database_facts
from decisions.decide import DatabaseFacts
from decisions.rules import RecordCheck
from schemas.resource import Resource
from tasks.retrying import chunk_task_options


@task(**chunk_task_options("check-chunk", "check-{resource.name}-chunk-{check.index}"))
def check_database(
    settings: Settings, scope: CheckScope, resource: Resource, check: RecordCheck, committed: bool
) -> DatabaseFacts:
    """The database's facts about the chunk's candidate rows (see `database_facts`)."""
    return database_facts(settings, scope, resource, check, committed)
