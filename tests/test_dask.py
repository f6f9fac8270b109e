"""Chunk work on a real Dask cluster (`distributed.LocalCluster`, worker processes): the
same tables, rejects and totals as the thread runner, also when a worker is killed
mid-chunk, and with workers reading their chunks from a bucket."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from bulkflow.errors import BudgetExceeded
from files.generate import GeneratorSpec, write_file
from flows.import_flow import import_flow
from schemas.parameters import ImportOptions, ResourceName
from tests.helpers import ImportState, import_file, import_state, reset_imports, s3, sql

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
CHUNK = 250


@pytest.fixture()
def partner_files(tmp_path: Path) -> list[tuple[str, Path]]:
    """Users and their articles with every kind of reject, in-file duplicates across
    chunks and id-less rows (ids resolved from natural keys)."""
    files = []
    for resource, rows in (("users", 1500), ("articles", 1000)):
        path = tmp_path / f"{resource}.csv"
        write_file(GeneratorSpec(resource, rows=rows, invalid_share=0.1, users=1200, seed=11), path)
        files.append((resource, path))
    return files


def _import_all(files: list[tuple[str, str]]) -> ImportState:
    """Import the files in order; the tables, every reject and the reports' totals."""
    reports = [
        import_flow(resource=cast(ResourceName, resource), source=source, options=ImportOptions(chunk_size=CHUNK))
        for resource, source in files
    ]
    return import_state(*reports)


def _on_threads_then_reset(files: list[tuple[str, str]]) -> ImportState:
    state = _import_all(files)
    reset_imports()
    return state


def test_dask_workers_end_exactly_as_threads_do(
    partner_files: list[tuple[str, Path]], dask_scheduler: str, settings_env: Callable[..., None]
) -> None:
    files = [(resource, str(path)) for resource, path in partner_files]
    expected = _on_threads_then_reset(files)
    assert expected.rejects and expected.totals
    settings_env(BULKFLOW_TASK_RUNNER="dask", BULKFLOW_DASK_ADDRESS=dask_scheduler)
    _import_all(files).assert_same(expected)


def test_the_local_cluster_listens_on_loopback_only(dask_scheduler: str) -> None:
    """The scheduler, the workers and the dashboard of the cluster an import starts itself."""
    from urllib.parse import urlsplit

    from distributed import Client

    with Client(dask_scheduler) as client:
        info = client.scheduler_info()
        dashboard = client.dashboard_link
    assert urlsplit(dask_scheduler).hostname == "127.0.0.1"
    assert {urlsplit(address).hostname for address in info["workers"]} == {"127.0.0.1"}
    assert urlsplit(dashboard).hostname == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", info["services"]["dashboard"]), timeout=5):
        pass  # it listens, on loopback
    for address in _own_addresses():
        with pytest.raises(OSError):
            socket.create_connection((address, info["services"]["dashboard"]), timeout=2).close()


def _own_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (none on a machine without a network)."""
    found = {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    return sorted(a for a in found if not a.startswith("127."))


def _kill_myself_in_chunk(marker: str, chunk_index: int) -> None:
    """Run on every worker: the first worker to write chunk `chunk_index`'s rejects
    (inside the chunk's transaction, its rows already written) dies by SIGKILL."""
    import tasks.load

    save_rejects = tasks.load._save_rejects

    def dying(conn, job_key, index, rejects):  # noqa: ANN001, ANN202 - the patched function's own signature
        if index == chunk_index:
            try:
                with open(marker, "x") as fh:
                    fh.write(str(os.getpid()))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return save_rejects(conn, job_key, index, rejects)

    tasks.load._save_rejects = dying


def test_a_worker_killed_mid_chunk_ends_as_a_clean_run(
    partner_files: list[tuple[str, Path]], dask_scheduler: str, settings_env: Callable[..., None], tmp_path: Path
) -> None:
    from distributed import Client

    users = [(resource, str(path)) for resource, path in partner_files if resource == "users"]
    expected = _on_threads_then_reset(users)
    marker = tmp_path / "killed"
    with Client(dask_scheduler) as client:
        client.run(_kill_myself_in_chunk, str(marker), 3)
        settings_env(BULKFLOW_TASK_RUNNER="dask", BULKFLOW_DASK_ADDRESS=dask_scheduler)
        state = _import_all(users)
        client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed one
    killed = int(marker.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)
    state.assert_same(expected)


def test_dask_workers_read_their_chunks_from_the_bucket(
    partner_files: list[tuple[str, Path]], dask_scheduler: str, settings_env: Callable[..., None], bucket: str
) -> None:
    users = [(resource, path) for resource, path in partner_files if resource == "users"]
    expected = _on_threads_then_reset([(resource, str(path)) for resource, path in users])
    ((_, path),) = users
    s3().put(str(path), f"{bucket}/in/users.csv")
    settings_env(BULKFLOW_TASK_RUNNER="dask", BULKFLOW_DASK_ADDRESS=dask_scheduler)
    state = _import_all([("users", f"{bucket}/in/users.csv")])
    state.assert_same(expected)


def test_a_job_failed_on_threads_resumes_on_dask_as_one_clean_run(
    partner_files: list[tuple[str, Path]], dask_scheduler: str, settings_env: Callable[..., None]
) -> None:
    from tests.test_exactly_once import _fail_chunk

    users = [(resource, str(path)) for resource, path in partner_files if resource == "users"]
    expected = _on_threads_then_reset(users)
    ((_, source),) = users
    _fail_chunk(3, "P0001")  # a terminal error while committing chunk 3: the run fails there
    try:
        with pytest.raises(Exception, match="injected failure"):
            import_flow(resource="users", source=source, options=ImportOptions(chunk_size=CHUNK))
    finally:
        sql("DROP TRIGGER IF EXISTS fail_chunk ON import_chunks")
    committed = sql("SELECT count(*) FROM import_chunks")[0][0]
    assert committed >= 3
    settings_env(BULKFLOW_TASK_RUNNER="dask", BULKFLOW_DASK_ADDRESS=dask_scheduler)
    report = import_flow(resource="users", source=source, options=ImportOptions(chunk_size=CHUNK))
    assert report.chunks_skipped == committed
    import_state(report).assert_same(expected)


def test_load_control_works_the_same_on_dask(
    partner_files: list[tuple[str, Path]], dask_scheduler: str, settings_env: Callable[..., None]
) -> None:
    users = str(partner_files[0][1])
    predicted = ("rows_read", "inserted", "updated", "unchanged", "rejected", "rejects_by_rule")
    expected = _on_threads_then_reset([("users", users)])
    on_threads = import_file("users", users, chunk_size=CHUNK, dry_run=True).model_dump(include=set(predicted))
    settings_env(BULKFLOW_TASK_RUNNER="dask", BULKFLOW_DASK_ADDRESS=dask_scheduler)
    dry = import_file("users", users, chunk_size=CHUNK, dry_run=True)
    assert dry.model_dump(include=set(predicted)) == on_threads and sql("SELECT count(*) FROM users") == [(0,)]
    with pytest.raises(BudgetExceeded, match="nothing was applied"):
        import_file("users", users, chunk_size=CHUNK, max_rejects=10)
    assert sql("SELECT count(*) FROM users") == [(0,)]
    reset_imports()  # the dry runs' and the aborted run's rejects
    import_state(import_file("users", users, chunk_size=CHUNK, atomic=True)).assert_same(expected)


def test_dask_workers_read_every_dialect_and_encoding_as_threads_read_plain_csv(
    partner_files: list[tuple[str, Path]], dask_scheduler: str, settings_env: Callable[..., None], tmp_path: Path
) -> None:
    """The users file rewritten `|`-separated in UTF-16: the workers read their spans of the
    decoded copy and end exactly as threads do with the plain file."""
    import csv

    _, users = partner_files[0]
    expected = _on_threads_then_reset([("users", str(users))])
    partner = tmp_path / "users-pipes.csv"
    with open(users, newline="", encoding="utf-8") as plain, open(partner, "w", newline="", encoding="utf-16") as out:
        csv.writer(out, delimiter="|", lineterminator="\n").writerows(csv.reader(plain))
    settings_env(BULKFLOW_TASK_RUNNER="dask", BULKFLOW_DASK_ADDRESS=dask_scheduler)
    report = import_file("users", partner, chunk_size=CHUNK, delimiter="|", encoding="utf-16")
    assert report.reading.delimiter == "|" and report.reading.encoding == "utf-16"
    import_state(report).assert_same(expected)
