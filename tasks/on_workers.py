"""Chunk tasks that read their part of the file themselves (`BULKFLOW_TASK_RUNNER=dask`).

Each task gets a chunk's span and opens the file where the workers reach it
(`SharedFile.location`: the bucket, or a path they share), so no rows travel from the
flow. Per chunk, `check_span` reads and validates the rows, asks the database, and sends
back only the candidates' keys; the flow decides the winners in file order
(`validate.decide_keys`); `load_span` reads and validates the rows again, applies that
decision and loads them exactly once. Reading twice costs worker CPU and buys tasks that
hold no state: a worker that dies mid-chunk takes nothing with it, and any worker redoes
the chunk.
"""

from __future__ import annotations

from prefect import task

from bulkflow.errors import ParameterError
from bulkflow.settings import Settings
from decisions.checks import CheckScope, database_facts
from decisions.decide import ChunkKeys, KeyDecision, apply_decision, chunk_keys
from decisions.rules import RecordCheck, check_records
from files.batches import ChunkSpan
from files.read import SharedFile, read_span
from files.storage import open_file
from schemas.reports import ChunkResult
from schemas.resource import Resource, RuleContext
from tasks.jobs import ChunkLedger
from tasks.load import apply_chunk
from tasks.retrying import chunk_task_options


@task(**chunk_task_options("check-chunk", "check-{resource.name}-chunk-{span.index}"))
def check_span(
    settings: Settings,
    scope: CheckScope,
    resource: Resource,
    file: SharedFile,
    span: ChunkSpan,
    committed: bool,
) -> ChunkKeys:
    """Read, validate and check the chunk against the database: its candidates' keys."""
    check = _read_and_check(settings, resource, file, span)
    return chunk_keys(resource, check, database_facts(settings, scope, resource, check, committed))


@task(**chunk_task_options("load-chunk", "load-{resource.name}-chunk-{span.index}"))
def load_span(
    settings: Settings,
    ledger: ChunkLedger,
    resource: Resource,
    file: SharedFile,
    span: ChunkSpan,
    decision: KeyDecision,
) -> ChunkResult:
    """Read and validate the chunk again, and load it as `decision` says, exactly once."""
    check = _read_and_check(settings, resource, file, span)
    return apply_chunk(settings, ledger, resource, apply_decision(resource, check, decision))


def _read_and_check(settings: Settings, resource: Resource, file: SharedFile, span: ChunkSpan) -> RecordCheck:
    try:
        with open_file(settings, file.location, "rb") as stream:
            rows = read_span(stream, file, resource, span, settings.max_record_bytes)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise ParameterError(
            f"a Dask worker cannot read {file.location} ({exc.strerror or type(exc).__name__}): workers read the "
            "file themselves, so it must be on storage every worker reaches (an s3:// source, or a shared path "
            "under BULKFLOW_HOME for downloaded, compressed or converted ones)"
        ) from None
    return check_records(resource, RuleContext.of(settings, file.values), span.index, rows)
