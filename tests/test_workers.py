"""Scale-out on a process work pool, as an operator runs it: two real `prefect worker`
processes share four imports into one table. The per-table write slot makes them take
turns (a waiting import waits, it does not fail), and the tables and rejects equal those of
the same imports run one after the other."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists

from flows.import_flow import import_flow
from schemas.parameters import ImportOptions
from tests.conftest import ROOT
from tests.helpers import reset_imports, sql

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
POOL = "bulkflow-workers-test"
FILES = 4
OPTIONS = {"chunk_size": 250}


def users_file(folder: Path, k: int) -> Path:
    """1,000 users of their own (disjoint ids and emails, so the order of the imports cannot
    matter), every 10th with a role the rules refuse."""
    path = folder / f"partner-{k}.csv"
    lines = ["id,email,name,role"] + [
        f"w{k}-{i},w{k}-{i}@example.com,User {i},{'wizard' if i % 10 == 0 else 'author'}" for i in range(1000)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def outcome() -> tuple[list[tuple], list[tuple], list[tuple]]:
    return (
        sql("SELECT id, email, name, role FROM users ORDER BY id"),
        sql("SELECT job_key, line, field, rule FROM import_rejects ORDER BY job_key, line, rule"),
        sql("SELECT job_key, chunk_index, rows_read, inserted, updated, rejected FROM import_chunks ORDER BY 1, 2"),
    )


@pytest.fixture()
def two_workers(prefect_api: str) -> Iterator[tuple[UUID, list[IO[bytes]]]]:
    """The import flow deployed on a process pool (from this checkout) and two workers taking
    one run at a time each; yields the deployment id and the workers' logs."""
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except ObjectAlreadyExists:
            pass
    deployment = import_flow.from_source(str(ROOT), "flows/import_flow.py:import_flow")
    deployment_id = cast(
        UUID,
        deployment.deploy(  # type: ignore[union-attr]  # from_source is typed for async callers too
            name="import-on-workers",
            work_pool_name=POOL,
            build=False,
            push=False,
            print_next_steps=False,
            ignore_warnings=True,
        ),
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    logs: list[IO[bytes]] = [tempfile.TemporaryFile() for _ in range(2)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                POOL,
                "--limit",
                "1",
                "--name",
                f"worker-{n}",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        for n, log in enumerate(logs)
    ]
    try:
        _wait_for(lambda: _online_workers() >= 2, workers, logs, "both workers online")
        yield deployment_id, logs
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=60)
        for log in logs:
            log.close()
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)


@pytest.mark.slow
def test_two_workers_share_four_imports_and_the_tables_equal_sequential_imports(
    tmp_path: Path, prefect_api: str, two_workers: tuple[UUID, list[IO[bytes]]]
) -> None:
    files = [users_file(tmp_path, k) for k in range(FILES)]
    for path in files:
        import_flow(resource="users", source=str(path), options=ImportOptions.model_validate(OPTIONS))
    sequential = outcome()
    reset_imports()

    deployment_id, logs = two_workers
    with get_client(sync_client=True) as client:
        runs = [
            client.create_flow_run_from_deployment(
                deployment_id, parameters={"resource": "users", "source": str(path), "options": OPTIONS}
            ).id
            for path in files
        ]
        _wait_for(lambda: all(_final(client, run) for run in runs), [], logs, "the four imports")
        states = [client.read_flow_run(run).state for run in runs]
    assert all(state is not None and state.is_completed() for state in states), [s.message for s in states if s]
    assert outcome() == sequential
    ran_by = _workers_of(prefect_api, runs)
    assert len(ran_by) == FILES and set(ran_by.values()) == {"worker-0", "worker-1"}, ran_by


def _online_workers() -> int:
    with get_client(sync_client=True) as client:
        return len(client.read_workers_for_work_pool(POOL))


def _final(client, run: UUID) -> bool:  # noqa: ANN001
    state = client.read_flow_run(run).state
    return state is not None and state.is_final()


def _workers_of(api_url: str, runs: list[UUID]) -> dict[str, str]:
    """Which worker ran each run: its `prefect.worker.executed-flow-run` event, read back from
    the Prefect API (events are stored asynchronously: polled until every run has one)."""
    body = {"filter": {"event": {"name": ["prefect.worker.executed-flow-run"]}, "order": "DESC"}, "limit": 50}
    wanted = {str(run) for run in runs}
    deadline = time.monotonic() + 60
    while True:
        ran_by = {}
        for event in httpx.post(f"{api_url}/events/filter", json=body, timeout=10).raise_for_status().json()["events"]:
            for related in event["related"]:
                run = related["prefect.resource.id"].removeprefix("prefect.flow-run.")
                if related.get("prefect.resource.role") == "flow-run" and run in wanted:
                    ran_by[run] = event["resource"]["prefect.resource.name"]
        if set(ran_by) == wanted or time.monotonic() > deadline:
            return ran_by
        time.sleep(0.5)


def _wait_for(done, workers: list[subprocess.Popen], logs: list[IO[bytes]], what: str, timeout: float = 240) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not done():
        if any(worker.poll() is not None for worker in workers) or time.monotonic() > deadline:
            tails = []
            for log in logs:
                log.seek(0)
                tails.append(log.read().decode(errors="replace")[-1500:])
            raise AssertionError(f"waiting for {what}: " + "\n---\n".join(tails))
        time.sleep(1)
