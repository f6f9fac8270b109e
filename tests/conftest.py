"""Test session: a fresh embedded PostgreSQL and one Prefect test server for the session."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import uuid4

import pytest

INTEGRATION_FIXTURES = {"db", "prefect_api", "served", "dask_scheduler", "s3_endpoint"}
SLOW_FIXTURES = {"served", "dask_scheduler", "s3_endpoint", "compose_services", "fresh_prefect_server", "two_workers"}
"""Fixtures that start servers, workers or a cluster beyond the session's database and Prefect API."""
ROOT = Path(__file__).resolve().parent.parent
TEST_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
"""Credentials the S3 test server takes (it takes any)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need PostgreSQL or the Prefect API are `integration`; the rest start
    nothing (`make test-unit` runs them alone). Tests that start servers, workers or a
    cluster of their own (through these fixtures, or marked so) are `slow`: `make test-fast`
    leaves them out."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if INTEGRATION_FIXTURES & fixtures:
            item.add_marker(pytest.mark.integration)
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def bulkflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("bulkflow-home")
    for name in ("DATABASE_URL", "DB_HOST", "BULKFLOW_CHUNK_SIZE", "BULKFLOW_ALLOWED_ROLES"):
        os.environ.pop(name, None)
    os.environ["BULKFLOW_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["BULKFLOW_PROFILES_DIR"] = str(_partner_profiles(tmp_path_factory.mktemp("profiles")))
    yield home
    from bulkflow.db import stop_embedded
    from bulkflow.settings import Settings

    stop_embedded(Settings())
    _stop_every_server_under(tmp_path_factory.getbasetemp())


def _partner_profiles(folder: Path) -> Path:
    """The profiles every import of the session sees (a served runner's too): the shipped
    ones and those of the partner corpus."""
    import shutil

    import yaml

    from tests.partner_corpus import SHIPPED_PROFILES, TEST_PROFILES

    shutil.copytree(SHIPPED_PROFILES, folder, dirs_exist_ok=True)
    for name, content in TEST_PROFILES.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(content, allow_unicode=True), encoding="utf-8")
    return folder


def _stop_every_server_under(root: Path) -> None:
    """Stop every PostgreSQL server whose data lives under the session's temporary folder
    (other homes of tests, servers restarted by `pg_ctl`, ones a flow-run subprocess
    started), then fail the run if one still runs: a suite leaves no server behind."""
    from bulkflow.embedded import stop_server

    for pid_file in root.rglob("postmaster.pid"):
        stop_server(pid_file.parent)
    left = [str(pid_file.parent) for pid_file in root.rglob("postmaster.pid") if _alive(pid_file)]
    assert not left, f"PostgreSQL still running after the tests: {left}"


def _alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, OSError):
        return False
    return True


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One real Prefect API server for the whole session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def served(prefect_api: str) -> Iterator[Callable[[], str]]:
    """`bulkflow serve` in its own process, as an operator runs it; yields a function that
    returns what its console showed so far."""
    from prefect.client.orchestration import get_client

    from tasks.runs import EXPORT, IMPORT, LANDING

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "BULKFLOW_ALLOW_PRIVATE_URLS": "true",  # the test file server is on loopback
        "BULKFLOW_LANDING_INTERVAL": "86400",  # its watcher looks once, at the start: tests start their own pick-ups
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # take new runs within a second, not ten
    }
    log = tempfile.TemporaryFile()  # not a pipe: an unread pipe would block the runner once full
    runner = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        with get_client(sync_client=True) as client:
            while True:
                try:
                    client.read_deployment_by_name(IMPORT)
                    client.read_deployment_by_name(EXPORT)
                    client.read_deployment_by_name(LANDING)
                    break
                except Exception as not_yet:
                    if runner.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        raise RuntimeError(f"bulkflow serve did not start: {log.read().decode()[-2000:]}") from not_yet
                    time.sleep(1)

        def console() -> str:
            log.seek(0)
            return log.read().decode(errors="replace")

        yield console
    finally:
        runner.terminate()
        runner.wait(timeout=30)
        log.close()


@pytest.fixture()
def db(bulkflow_home: Path) -> Iterator[None]:
    """An empty database (schema applied) for each integration test."""
    from tests.helpers import EVERY_TABLE, truncate

    truncate(*EVERY_TABLE)
    yield


@pytest.fixture()
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Set environment variables for the settings model, restored afterwards. Entry points
    build their settings when they start, so nothing is cached to clear."""

    def apply(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    yield apply
    monkeypatch.undo()


@pytest.fixture()
def file_server(tmp_path: Path, settings_env: Callable[..., None]) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a temporary folder: (base URL, folder). Loopback URLs are
    refused by default, so this allows them for the test."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings_env(BULKFLOW_ALLOW_PRIVATE_URLS="true")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """`moto_server` on a free loopback port, for the session."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture()
def bucket(s3_endpoint: str, settings_env: Callable[..., None]) -> str:
    """A new bucket; the settings point at the test server; returns `s3://<bucket>`."""
    settings_env(BULKFLOW_S3_ENDPOINT_URL=s3_endpoint, BULKFLOW_URL_SCHEMES="http,https,s3", **TEST_AWS)
    from tests.helpers import s3

    name = f"bulkflow-{uuid4().hex[:12]}"
    s3().mkdir(name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def dask_scheduler(prefect_api: str) -> Iterator[str]:
    """A real Dask cluster with two worker processes (`distributed.LocalCluster`) for the
    session, its workers reporting to the test Prefect API; yields the scheduler address."""
    from distributed import LocalCluster

    from bulkflow.settings import Settings
    from tasks.cluster import local_cluster_kwargs

    kwargs = local_cluster_kwargs(Settings(), prefect_api)  # the cluster an import would start itself
    kwargs["env"] |= TEST_AWS
    with LocalCluster(**kwargs) as cluster:
        yield cluster.scheduler_address
