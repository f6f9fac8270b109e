"""Names and tags that say what a run does, so the Prefect runs list tells them apart.

Every bulkflow run carries the tags `bulkflow`, `resource:<name>` (when it has one) and
`via:<cli|api|landing|schedule|deployment|python>`. Callers that know how the run was
started say so with a `via:` tag (the CLI, the API, the landing pick-up); a run without one
was started from its deployment (by a schedule, or from the Prefect UI or API) or from
Python, which the run itself finds out and records.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.context import TagsContext
from prefect.runtime import flow_run

VIA_PREFIX = "via:"


def run_tags(resource: str | None, via: str | None = None) -> set[str]:
    """The tags a run of `resource` started `via` something carries."""
    tags = {"bulkflow"}
    if resource:
        tags.add(f"resource:{resource}")
    if via:
        tags.add(VIA_PREFIX + via)
    return tags


def label_run(resource: str | None) -> str:
    """Add to the current flow run the tags it lacks (see the module docstring); returns its
    `via:` tag, for the runs it starts in turn."""
    run_id = flow_run.id
    current = set(flow_run.tags)
    given = sorted(tag for tag in current if tag.startswith(VIA_PREFIX))
    if not run_id:
        return given[0] if given else VIA_PREFIX + "python"
    with get_client(sync_client=True) as client:
        wanted = run_tags(resource)
        if not given:
            run = client.read_flow_run(run_id)
            how = "python" if run.deployment_id is None else "schedule" if run.auto_scheduled else "deployment"
            given = [VIA_PREFIX + how]
        wanted.add(given[0])
        if not wanted <= current:
            client.update_flow_run(run_id, tags=sorted(current | wanted))
    return given[0]


@contextmanager
def untagged_tasks() -> Iterator[None]:
    """Task runs started in the block carry no tags. The flow run has them (and says what
    the run does); a tagged task run costs two more API calls, as Prefect takes and frees a
    tag concurrency slot for each one."""
    with TagsContext(current_tags=set()):
        yield
