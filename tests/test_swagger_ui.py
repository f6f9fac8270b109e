"""Swagger UI in a real headless browser with every outside address unreachable: it renders
(its JavaScript and CSS come from the API itself, never from a CDN), and a person can upload
a file through its form."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from api.app import create_app
from bulkflow.settings import Settings
from tests.browser import browser_command, open_page
from tests.helpers import DATA, sql

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts an HTTP server and a browser
UPLOAD = "#operations-imports-create_import_v1_imports_post"


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
    return subprocess.run(
        browser_command("--virtual-time-budget=15000", *arguments), capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_swagger_ui_renders_the_operations_offline(api_url: str) -> None:
    dom = browser("--dump-dom", f"{api_url}/ui").stdout
    assert "swagger-ui" in dom
    assert 'class="opblock-summary-path"' in dom or "opblock-summary-path" in dom, dom[-2000:]
    for path in ("/v1/imports", "/v1/exports", "/v1/imports/{job_id}"):
        assert path in dom
    assert "cdn.jsdelivr.net" not in dom


@pytest.mark.usefixtures("served", "db")
def test_a_file_uploaded_through_the_swagger_form_is_accepted_and_imported(api_url: str) -> None:
    """POST /v1/imports, Try it out, choose a file, pick `users`, Execute: 202, with the
    optional format left as the form offers it (empty: from the file's name)."""
    with open_page(f"{api_url}/ui") as page:
        page.wait_for(f"document.querySelector('{UPLOAD} .opblock-summary-control')")
        page.evaluate(f"document.querySelector('{UPLOAD} .opblock-summary-control').click()")
        page.wait_for(f"document.querySelector('{UPLOAD} .try-out__btn')")
        page.evaluate(f"document.querySelector('{UPLOAD} .try-out__btn').click()")
        page.wait_for(f"document.querySelector('{UPLOAD} tr[data-property-name=file] input[type=file]')")
        assert page.evaluate(f"document.querySelector('{UPLOAD} tr[data-property-name=format] select').value") == ""
        assert (
            page.evaluate(f"document.querySelector('{UPLOAD} tr[data-property-name=resource] select').value") == "users"
        )
        page.set_files(f"{UPLOAD} tr[data-property-name=file] input[type=file]", str(DATA / "users.csv"))
        page.evaluate(f"document.querySelector('{UPLOAD} .execute').click()")
        page.wait_for(f"document.querySelector('{UPLOAD} .live-responses-table .response-col_status')")
        status = page.evaluate(
            f"document.querySelector('{UPLOAD} .live-responses-table tbody .response-col_status').innerText"
        )
        body = page.evaluate(f"document.querySelector('{UPLOAD} .live-responses-table .microlight').innerText")
    assert status.strip() == "202", body
    job_id = json.loads(body)["job_id"]
    deadline = time.monotonic() + 120
    while sql("SELECT count(*) FROM users")[0][0] < 6:  # the sample's six valid users
        assert time.monotonic() < deadline, httpx.get(f"{api_url}/v1/imports/{job_id}", timeout=10).text
        time.sleep(0.5)
