"""The remote source policy: schemes, internal addresses, redirects, size limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bulkflow.errors import InputError, ParameterError
from bulkflow.settings import Settings
from files.remote import check_remote_url
from files.staging import stage_source
from tests.helpers import DATA


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/users.csv", "internal address 127.0.0.1"),
        ("http://localhost/users.csv", "internal address"),
        ("http://169.254.169.254/latest/meta-data/", "internal address 169.254.169.254"),
        ("http://10.1.2.3/users.csv", "internal address 10.1.2.3"),
        ("http://192.168.0.10/users.csv", "internal address"),
        ("http://[::1]/users.csv", "internal address ::1"),
        ("http://[::ffff:127.0.0.1]/users.csv", "internal address"),
        ("http://0.0.0.0/users.csv", "internal address"),
        ("http://100.64.0.1/users.csv", "internal address 100.64.0.1"),  # shared address space
        ("http://100.100.100.200/latest/meta-data/", "internal address"),  # a cloud metadata address
        ("http://192.0.0.8/users.csv", "internal address 192.0.0.8"),
        ("http://[2002:7f00:1::1]/users.csv", "internal address"),  # 6to4 carrying 127.0.0.1
        ("http://[2002:a9fe:a9fe::1]/users.csv", "internal address"),  # 6to4 carrying 169.254.169.254
        ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/users.csv", "internal address"),  # Teredo, 127.0.0.1
        ("http://[64:ff9b::a9fe:a9fe]/users.csv", "internal address"),  # NAT64 of 169.254.169.254
        ("http://[::127.0.0.1]/users.csv", "internal address ::7f00:1"),  # IPv4-compatible, 127.0.0.1
        ("http://[::a9fe:a9fe]/users.csv", "internal address"),  # IPv4-compatible, 169.254.169.254
        ("http://[64:ff9b:1::7f00:1]/users.csv", "internal address 64:ff9b:1::7f00:1"),  # local-use NAT64
        ("http://[64:ff9b:1:a9fe:a9:fe00::]/users.csv", "internal address"),  # local-use NAT64, RFC 6052 /48 form
        ("ftp://example.com/users.csv", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("s3://bucket/users.csv", "scheme 's3'"),
    ],
)
def test_internal_addresses_and_other_schemes_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ParameterError, match="refused URL") as refused:
        check_remote_url(url, Settings())
    assert reason in str(refused.value)


def test_public_addresses_pass_and_settings_widen_the_policy(settings_env: Callable[..., None]) -> None:
    check_remote_url("https://93.184.215.14/users.csv", Settings())  # a literal public address: no DNS needed
    settings_env(BULKFLOW_ALLOW_PRIVATE_URLS="true", BULKFLOW_URL_SCHEMES="https,s3")
    check_remote_url("https://127.0.0.1/users.csv", Settings())
    check_remote_url("s3://bucket/users.csv", Settings())
    with pytest.raises(ParameterError, match="scheme 'http'"):
        check_remote_url("http://127.0.0.1/users.csv", Settings())


def test_staging_a_loopback_url_is_refused_by_default() -> None:
    with pytest.raises(ParameterError, match="BULKFLOW_ALLOW_PRIVATE_URLS"):
        stage_source("http://127.0.0.1:9/users.csv", settings=Settings())


def test_downloads_stop_at_the_size_limit(file_server: tuple[str, Path], settings_env: Callable[..., None]) -> None:
    base_url, folder = file_server
    (folder / "users.csv").write_bytes((DATA / "users.csv").read_bytes())
    settings_env(BULKFLOW_MAX_SOURCE_BYTES="100")
    with pytest.raises(InputError, match="larger than the 100 byte limit"):
        stage_source(f"{base_url}/users.csv", settings=Settings())


def test_each_redirect_hop_is_checked(file_server: tuple[str, Path], settings_env: Callable[..., None]) -> None:
    """An allowed first hop must not lead the fetch somewhere the policy refuses."""
    import http.server
    import threading

    base_url, folder = file_server
    (folder / "users.csv").write_bytes((DATA / "users.csv").read_bytes())
    target = {"location": f"{base_url}/users.csv"}

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(302)
            self.send_header("Location", target["location"])
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        first_hop = f"http://127.0.0.1:{server.server_address[1]}/users.csv"
        staged = stage_source(first_hop, settings=Settings())
        staged.cleanup()
        assert staged.size_bytes == len((DATA / "users.csv").read_bytes())
        # Only loopback is reachable here, so the refused hop is refused by its scheme.
        settings_env(BULKFLOW_URL_SCHEMES="http")
        target["location"] = target["location"].replace("http://", "https://")
        with pytest.raises(ParameterError, match="scheme 'https'"):
            stage_source(first_hop, settings=Settings())
    finally:
        server.shutdown()
