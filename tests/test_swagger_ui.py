"""Swagger UI renders in a real headless browser with every outside address unreachable:
its JavaScript and CSS come from the API itself, never from a CDN."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from api.app import create_app
from bulkflow.settings import Settings

pytestmark = pytest.mark.integration  # starts an HTTP server and a browser
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture()
def api_url() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(Settings()), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def browser(*arguments: str) -> subprocess.CompletedProcess[str]:
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    offline = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", offline,
               "--virtual-time-budget=15000", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_swagger_ui_renders_the_operations_offline(api_url: str) -> None:
    dom = browser("--dump-dom", f"{api_url}/ui").stdout
    assert "swagger-ui" in dom
    assert 'class="opblock-summary-path"' in dom or "opblock-summary-path" in dom, dom[-2000:]
    for path in ("/v1/imports", "/v1/exports", "/v1/imports/{job_id}"):
        assert path in dom
    assert "cdn.jsdelivr.net" not in dom
