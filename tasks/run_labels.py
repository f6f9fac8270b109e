"""Names and tags that say what a run does, so the Prefect runs list tells them apart.

Every bulkflow run carries the tags `bulkflow`, `resource:<name>` (when it has one) and
`via:<cli|api|landing|schedule|deployment|python>`. Callers that know how the run was
started say so with a `via:` tag (the CLI, the API, the landing pick-up); a run without one
was started from its deployment (by a schedule, or from the Prefect UI or API) or from
Python, which the run itself finds out and records. A dry run also carries `dry-run`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prefect.client.orchestration import get_client
from prefect.context import TagsContext
from prefect.logging import get_logger
from prefect.runtime import flow_run

from files.formats import display_name

VIA_PREFIX = "via:"
RETRYABLE_FAILURE = "failure:retryable"
"""Tag of a run that failed for a passing reason (the database or a store away): a later
try may succeed. Whoever started the run reads it (the landing pick-up), never the message."""
DRY_RUN = "dry-run"
"""Tag of an import run that only predicted (`ImportOptions.dry_run`): it wrote nothing."""


def import_run_name(resource: str, source: str, source_name: str | None = None) -> str:
    """`import-users-partner-42.csv`: the resource and the file as its sender names it. The
    flow names its runs so, and so does whoever creates one (the API, the landing pick-up),
    so a run has its real name from the moment it is listed, not a random one."""
    return f"import-{resource}-{display_name(source, source_name)}"


def export_run_name(resource: str, format: str) -> str:
    return f"export-{resource}-{format}"


def landing_run_name() -> str:
    """`landing-2026-12-01T22:14Z`: when the pick-up was started."""
    return f"landing-{datetime.now(UTC):%Y-%m-%dT%H:%MZ}"


def run_tags(resource: str | None, via: str | None = None) -> set[str]:
    """The tags a run of `resource` started `via` something carries."""
    tags = {"bulkflow"}
    if resource:
        tags.add(f"resource:{resource}")
    if via:
        tags.add(VIA_PREFIX + via)
    return tags


def label_run(resource: str | None, extra: set[str] | None = None) -> str:
    """Add to the current flow run the tags it lacks (see the module docstring), and `extra`;
    returns its `via:` tag, for the runs it starts in turn."""
    run_id = flow_run.id
    current = set(flow_run.tags)
    given = sorted(tag for tag in current if tag.startswith(VIA_PREFIX))
    if not run_id:
        return given[0] if given else VIA_PREFIX + "python"
    wanted = run_tags(resource) | (extra or set())
    if given and wanted | {given[0]} <= current:
        return given[0]  # the caller tagged the run already (the CLI, the API, the landing)
    with get_client(sync_client=True) as client:
        if not given:
            run = client.read_flow_run(run_id)
            how = "python" if run.deployment_id is None else "schedule" if run.auto_scheduled else "deployment"
            given = [VIA_PREFIX + how]
        wanted.add(given[0])
        if not wanted <= current:
            client.update_flow_run(run_id, tags=sorted(current | wanted))
    return given[0]


def tag_retryable_failure() -> None:
    """Tag the current flow run `RETRYABLE_FAILURE` (nothing outside a flow run). Best
    effort: the run fails with its own error all the same."""
    run_id = flow_run.id
    if not run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, tags=sorted({*client.read_flow_run(run_id).tags, RETRYABLE_FAILURE}))
    except Exception as untagged:  # noqa: BLE001 - the Prefect API itself may be what is away
        get_logger(__name__).warning("could not tag the failed run as retryable: %s", untagged)


@contextmanager
def untagged_tasks() -> Iterator[None]:
    """Task runs started in the block carry no tags. The flow run has them (and says what
    the run does); a tagged task run costs two more API calls, as Prefect takes and frees a
    tag concurrency slot for each one."""
    with TagsContext(current_tags=set()):
        yield
