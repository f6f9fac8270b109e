"""Test session: a fresh embedded PostgreSQL and one Prefect test server for the session."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

INTEGRATION_FIXTURES = {"db", "prefect_api", "served"}
ROOT = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need PostgreSQL or the Prefect API are `integration`; the rest start
    nothing (`make test-unit` runs them alone)."""
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def bulkflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("bulkflow-home")
    for name in ("DATABASE_URL", "DB_HOST", "BULKFLOW_CHUNK_SIZE", "BULKFLOW_ALLOWED_ROLES"):
        os.environ.pop(name, None)
    os.environ["BULKFLOW_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    yield home
    from bulkflow.db import stop_embedded
    from bulkflow.settings import Settings

    stop_embedded(Settings())


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One real Prefect API server for the whole session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def served(prefect_api: str) -> Iterator[None]:
    """`bulkflow serve` in its own process, as an operator runs it."""
    from prefect.client.orchestration import get_client

    from deployments.names import EXPORT, IMPORT, LANDING

    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "BULKFLOW_ALLOW_PRIVATE_URLS": "true",  # the test file server is on loopback
        "BULKFLOW_LANDING_INTERVAL": "86400",  # its watcher looks once, at the start: tests start their own pick-ups
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # take new runs within a second, not ten
    }
    log = tempfile.TemporaryFile()  # not a pipe: an unread pipe would block the runner once full
    runner = subprocess.Popen(
        [sys.executable, "-m", "bulkflow", "serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
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
        yield
    finally:
        runner.terminate()
        runner.wait(timeout=30)
        log.close()


@pytest.fixture()
def db(bulkflow_home: Path) -> Iterator[None]:
    """An empty database (schema applied) for each integration test."""
    from bulkflow.db import connect, execute_all
    from bulkflow.settings import Settings

    with connect(Settings()) as conn:
        execute_all(
            conn,
            ["TRUNCATE comments, articles, users, import_rejects, import_chunks, import_runs, import_jobs, "
             "export_jobs, landing_files CASCADE"],
        )
        conn.commit()
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
