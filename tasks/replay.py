"""A job's rejected records as a file of their own: to hand back to the partner, or to
import again (`ImportOptions.rejects_of`) once what refused them is fixed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

from prefect import task
from prefect.logging import get_run_logger

from bulkflow.errors import ParameterError
from bulkflow.settings import Settings
from files.replay import Replayed, write_records
from schemas import get_resource
from schemas.parameters import check_format
from tasks.jobs import find_job_key, iter_rejected_records, job_source
from tasks.retrying import bookkeeping_task_options


def rejected_job(settings: Settings, run_or_job: str, resource: str | None = None) -> str:
    """The job key of a flow run id or job key whose rejects are wanted (of `resource`, if given)."""
    job_key = find_job_key(settings, run_or_job)
    if job_key is None:
        raise ParameterError(f"no import found for {run_or_job!r}: give a flow run id or a job key")
    if resource is not None and job_source(settings, job_key)[0] != resource:
        raise ParameterError(f"{run_or_job} is an import of {job_source(settings, job_key)[0]}, not of {resource}")
    return job_key


def write_rejected(settings: Settings, job_key: str, sink: IO[bytes]) -> Replayed:
    """The job's rejected records, written to `sink` in the job's source format with its header."""
    resource, format = job_source(settings, job_key)
    fields = get_resource(resource).field_names
    return write_records(iter_rejected_records(settings, job_key), check_format(format), fields, sink)


@task(**bookkeeping_task_options("replay-rejects", "replay-rejects-of-{resource}"))
def replay_source(settings: Settings, resource: str, run_or_job: str) -> str:
    """Write the rejected records of `run_or_job` (an import of `resource`) under
    `<home>/replays/`, and return the file to import."""
    job_key = rejected_job(settings, run_or_job, resource)
    format = job_source(settings, job_key)[1]
    path = Path(settings.home).resolve() / "replays" / f"{hashlib.sha256(job_key.encode()).hexdigest()[:24]}.{format}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as sink:
        replayed = write_rejected(settings, job_key, sink)
    if replayed.records == 0:
        raise ParameterError(f"{run_or_job} rejected no record that can be imported again")
    if replayed.cut_short:
        get_run_logger().warning(
            "%d rejected record(s) of %s were too long for the reject report to keep whole: left out of the replay",
            replayed.cut_short,
            job_key,
        )
    return str(path)
