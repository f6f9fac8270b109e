"""The Prefect task options the tasks share: retried only when the error is retryable
(database down, connection lost, conflicts in flight), never cached."""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from bulkflow.errors import retry_condition

CHUNK_RETRY_DELAYS_S = [1, 5, 15]


def chunk_task_options(name: str, run_name: str) -> dict[str, Any]:
    """Options for `@task(**...)` of a task that works on one chunk."""
    return {
        "name": name,
        "task_run_name": run_name,
        "retries": len(CHUNK_RETRY_DELAYS_S),
        "retry_delay_seconds": CHUNK_RETRY_DELAYS_S,
        "retry_condition_fn": retry_condition,
        "cache_policy": NO_CACHE,
        "persist_result": False,
    }


def bookkeeping_task_options(name: str, run_name: str, retry_delay_s: int = 2) -> dict[str, Any]:
    """Options for `@task(**...)` of a task that reads or writes the run's bookkeeping (a job,
    a landed file): three retries, `retry_delay_s` apart."""
    return {
        "name": name,
        "task_run_name": run_name,
        "retries": 3,
        "retry_delay_seconds": retry_delay_s,
        "retry_condition_fn": retry_condition,
        "cache_policy": NO_CACHE,
    }
