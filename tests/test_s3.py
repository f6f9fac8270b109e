"""s3:// for real: sources, landing storage and export targets on a real S3 API on loopback
(`moto_server`, started here), through the `s3` extra (s3fs) with BULKFLOW_S3_ENDPOINT_URL."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from bulkflow.settings import Settings
from tests.helpers import DATA, reset_imports, s3, sql

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


def error_lines(stderr: str) -> list[str]:
    """The CLI's one-line errors (Prefect's console log lines may come before them)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_import_from_a_bucket_equals_the_local_import(bucket: str) -> None:
    from flows.import_flow import import_flow

    local = import_flow(resource="users", source=str(DATA / "users.csv"))
    expected = sql("SELECT id, email, name, role, active, created_at FROM users ORDER BY id")
    reset_imports()
    s3().pipe(f"{bucket}/in/users.csv.gz", gzip.compress((DATA / "users.csv").read_bytes()))
    remote = import_flow(resource="users", source=f"{bucket}/in/users.csv.gz")
    assert {k: getattr(remote, k) for k in ("rows_read", "inserted", "rejected")} == {
        k: getattr(local, k) for k in ("rows_read", "inserted", "rejected")
    }
    assert sql("SELECT id, email, name, role, active, created_at FROM users ORDER BY id") == expected


def test_the_size_limit_holds_for_bucket_sources(bucket: str, settings_env: Callable[..., None]) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    s3().pipe(f"{bucket}/users.csv", (DATA / "users.csv").read_bytes())
    settings_env(BULKFLOW_MAX_SOURCE_BYTES="100")
    result = CliRunner().invoke(app, ["import", "users", f"{bucket}/users.csv"])
    assert result.exit_code == 2, result.output
    [error] = error_lines(result.stderr)
    assert "100" in error
    missing = CliRunner().invoke(app, ["import", "users", f"{bucket}/nothing-here.csv"])
    assert missing.exit_code == 2 and "nothing-here.csv" in error_lines(missing.stderr)[0], missing.output
    assert sql("SELECT count(*) FROM users") == [(0,)]


def test_an_unreachable_store_is_the_environment_exit_1(bucket: str, settings_env: Callable[..., None]) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        # one attempt: botocore's own retries of a refused connection only make the test slow
        settings_env(BULKFLOW_S3_ENDPOINT_URL=f"http://127.0.0.1:{closed.getsockname()[1]}", AWS_MAX_ATTEMPTS="1")
    result = CliRunner().invoke(app, ["import", "users", f"{bucket}/users.csv"])
    assert result.exit_code == 1, result.output
    [error] = error_lines(result.stderr)
    assert error.startswith("error: Could not connect")


def test_export_to_a_bucket_with_its_manifest(bucket: str, settings_env: Callable[..., None]) -> None:
    from flows.export_flow import export_flow
    from flows.import_flow import import_flow

    import_flow(resource="users", source=str(DATA / "users.csv"))
    settings_env(BULKFLOW_EXPORT_URL=f"{bucket}/exports")
    manifest = export_flow(resource="users", format="csv", fields=["id", "email"])
    assert manifest.location.startswith(f"{bucket}/exports/users-")
    content = s3().cat(manifest.location)
    assert hashlib.sha256(content).hexdigest() == manifest.sha256 and len(content) == manifest.bytes
    assert json.loads(s3().cat(manifest.location + ".manifest.json"))["sha256"] == manifest.sha256
    assert manifest.rows == len(content.decode().splitlines()) - 1 == sql("SELECT count(*) FROM users")[0][0]


def test_landing_storage_in_a_bucket(bucket: str, settings_env: Callable[..., None]) -> None:
    import io

    from tasks.landing import list_landed, store_upload, unseen_files

    settings_env(BULKFLOW_LANDING_URL=f"{bucket}/landing")
    fs = s3()
    fs.pipe(f"{bucket}/landing/articles/b.ndjson", (DATA / "articles.ndjson").read_bytes())
    fs.pipe(f"{bucket}/landing/users/a.csv", (DATA / "users.csv").read_bytes())
    fs.pipe(f"{bucket}/landing/users/a2.csv.part", b"id,email\n")
    landed = list_landed(Settings(), f"{bucket}/landing")
    assert [(f.resource, f.location, f.size) for f in landed] == [
        ("users", f"{bucket}/landing/users/a.csv", (DATA / "users.csv").stat().st_size),
        ("articles", f"{bucket}/landing/articles/b.ndjson", (DATA / "articles.ndjson").stat().st_size),
    ]
    assert unseen_files(Settings(), f"{bucket}/landing") == landed
    stored = store_upload(Settings(), io.BytesIO(b"id,email\n1,a@example.com\n"), "u.csv", None)
    assert stored.startswith(f"{bucket}/landing/uploads/") and fs.cat(stored) == b"id,email\n1,a@example.com\n"


def test_a_store_without_its_package_is_a_parameter_error() -> None:
    from bulkflow.errors import ParameterError
    from files.storage import open_file

    with pytest.raises(ParameterError, match=r"^gcs:// storage needs its fsspec package"):
        open_file(Settings(), "gcs://bucket/users.csv")


def _download(client: TestClient, url: str) -> httpx.Response:
    """GET an API download URL, not following its redirect."""
    return client.get(url, follow_redirects=False)


def test_a_download_from_a_bucket_redirects_to_a_link_signed_for_each_request(
    bucket: str, settings_env: Callable[..., None]
) -> None:
    from flows.export_flow import export_flow
    from flows.import_flow import import_flow

    import_flow(resource="users", source=str(DATA / "users.csv"))
    settings_env(BULKFLOW_EXPORT_URL=f"{bucket}/exports", BULKFLOW_DOWNLOAD_URL_TTL="60")
    manifest = export_flow(resource="users", format="csv")
    with TestClient(create_app(Settings())) as client:
        status = client.get(f"/v1/exports/{manifest.job_id}").json()
        first = _download(client, status["download_url"])
        assert first.status_code == 307 and first.headers["cache-control"] == "no-store"
        link = first.headers["location"]
        assert parse_qs(urlsplit(link).query)["X-Amz-Expires"] == ["60"]
        fetched = httpx.get(link)  # no credentials: the signature is the permission (the test server checks none)
        assert fetched.status_code == 200 and fetched.content == s3().cat(manifest.location)

        settings_env(BULKFLOW_DOWNLOAD_URL_TTL="120")
    with TestClient(create_app(Settings())) as client:
        second = _download(client, status["download_url"]).headers["location"]
    assert parse_qs(urlsplit(second).query)["X-Amz-Expires"] == ["120"]  # minted now, not kept from the write
    kept = sql(f"SELECT manifest::text, location FROM export_jobs WHERE flow_run_id = '{manifest.job_id}'")
    assert "X-Amz" not in str(kept) and "Signature" not in str(kept)


def test_a_partitioned_dataset_in_a_bucket_lists_and_signs_each_file(
    bucket: str, settings_env: Callable[..., None], tmp_path: Path
) -> None:
    import polars as pl

    from flows.export_flow import export_flow
    from flows.import_flow import import_flow
    from tests.helpers import table

    import_flow(resource="users", source=str(DATA / "users.csv"))
    settings_env(BULKFLOW_EXPORT_URL=f"{bucket}/exports")
    manifest = export_flow(resource="users", format="parquet", partition_by="role")
    assert manifest.location.startswith(f"{bucket}/exports/users-") and manifest.files
    s3().get(manifest.location, str(tmp_path / "users"), recursive=True)
    back = pl.scan_parquet(tmp_path / "users", hive_partitioning=True).collect()
    assert back.select(table("users").columns).sort("id").equals(table("users"))
    for listed in manifest.files:
        assert hashlib.sha256(s3().cat(listed.location)).hexdigest() == listed.sha256

    with TestClient(create_app(Settings())) as client:
        status = client.get(f"/v1/exports/{manifest.job_id}").json()
        assert status["download_url"] is None and len(status["file_urls"]) == len(manifest.files)
        assert [f["location"] for f in status["manifest"]["files"]] == [f.location for f in manifest.files]
        for url, listed in zip(status["file_urls"], manifest.files, strict=True):
            link = _download(client, url).headers["location"]
            assert httpx.get(link).content == s3().cat(listed.location)
        whole = _download(client, f"/v1/exports/{manifest.job_id}/download")
        assert (whole.status_code, whole.json()["error"]["code"]) == (409, "many_files")
        missing = _download(client, f"/v1/exports/{manifest.job_id}/download?file=../../etc/passwd")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
