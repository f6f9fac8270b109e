"""How many imports may write one table at once, whatever the number of workers.

A Prefect global concurrency limit per resource (`bulkflow-import-<resource>`, sized by
`BULKFLOW_MAX_IMPORTS_PER_RESOURCE`, default 1) guards each import's chunk work: an import
that finds the table's slots taken waits for one, it does not fail. Slots are leases the
holder renews while it works; a worker that dies mid-import (or a `kill -9`) stops renewing,
and its slot frees itself when the lease runs out, within LEASE_S, so a re-run waits that
long at most.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

LEASE_S = 60.0
"""The shortest lease Prefect grants."""


def limit_name(resource: str) -> str:
    return f"bulkflow-import-{resource}"


@contextmanager
def table_slot(resource: str, limit: int) -> Iterator[None]:
    """Hold one of the `limit` write slots of `resource`'s table (waiting for it)."""
    name = limit_name(resource)
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, limit)
        except ObjectAlreadyExists:  # another import created it between our read and create
            client.upsert_global_concurrency_limit_by_name(name, limit)
    with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_S):
        yield
