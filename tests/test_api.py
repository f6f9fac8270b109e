"""The /v1 API against the real app, a real Prefect server, the deployments served by a real
`bulkflow serve` process, and the real database."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import UUID

import polars as pl
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from bulkflow.settings import Settings
from tests.helpers import DATA, load_samples, sql, table

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
ROOT = DATA.parent


@pytest.fixture()
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


def finished(client: TestClient, status_url: str, timeout: float = 180) -> dict:
    """Poll a job's status URL until it is completed, failed or cancelled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(status_url).json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(1)
    raise AssertionError(f"job still {job['status']} after {timeout}s: {status_url}")


def upload(client: TestClient, path: Path, resource: str, key: str | None = None):  # noqa: ANN201
    headers = {"Idempotency-Key": key} if key else {}
    with path.open("rb") as fh:
        return client.post("/v1/imports", files={"file": (path.name, fh)}, data={"resource": resource}, headers=headers)


@pytest.mark.usefixtures("served")
def test_upload_with_an_idempotency_key_completes_with_exact_counts_once(client: TestClient) -> None:
    first = upload(client, DATA / "users.csv", "users", key="partner-42-users")
    assert first.status_code == 202, first.text
    again = upload(client, DATA / "users.csv", "users", key="partner-42-users")
    assert again.json()["job_id"] == first.json()["job_id"]

    job = finished(client, first.json()["status_url"])
    assert job["status"] == "completed", job
    assert (job["rows_read"], job["inserted"], job["updated"], job["rejected"]) == (14, 6, 0, 8)
    assert job["rejects_by_rule"]["invalid_email"] == 1 and job["resource"] == "users"
    assert job["rejects_sample"] and {"line", "field", "rule", "message", "value"} <= set(job["rejects_sample"][0])
    assert sql("SELECT count(*) FROM users")[0][0] == 6
    # The run is named after the uploaded file (not its stored, hashed copy) and says how it started.
    assert job["source_name"] == "users.csv" and not job["source"].startswith("/")
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as prefect:
        run = prefect.read_flow_run(UUID(job["job_id"]))
    assert run.name == "import-users-users.csv"
    assert {"bulkflow", "resource:users", "via:api"} <= set(run.tags)

    rejects = client.get(job["rejects_url"])
    assert rejects.headers["content-type"].startswith("application/x-ndjson")
    entries = [json.loads(line) for line in rejects.text.splitlines()]
    assert len(entries) == sum(job["rejects_by_rule"].values())
    assert {entry["rule"] for entry in entries} == set(job["rejects_by_rule"])


@pytest.mark.usefixtures("served")
def test_uploads_sent_at_once_are_each_answered_with_the_job_of_their_key(client: TestClient) -> None:
    """The app creates runs one at a time on one client: uploads sent together are all
    accepted, those with one key share one job, and each key has a job of its own."""
    keys = [f"together-{index % 3}" for index in range(12)]
    with ThreadPoolExecutor(len(keys)) as pool:
        answers = list(pool.map(lambda key: upload(client, DATA / "users.csv", "users", key=key), keys))
    assert [answer.status_code for answer in answers] == [202] * len(keys), [a.text for a in answers]
    jobs_of_key: dict[str, set[str]] = {}
    for key, answer in zip(keys, answers, strict=True):
        jobs_of_key.setdefault(key, set()).add(answer.json()["status_url"])
    assert all(len(jobs) == 1 for jobs in jobs_of_key.values())
    assert len(set.union(*jobs_of_key.values())) == 3
    for (status_url,) in jobs_of_key.values():
        assert finished(client, status_url)["status"] == "completed"


@pytest.mark.usefixtures("served")
def test_a_re_import_reports_what_its_own_run_did_and_the_job_apart(client: TestClient) -> None:
    first = finished(client, upload(client, DATA / "users.csv", "users").json()["status_url"])
    again = finished(client, upload(client, DATA / "users.csv", "users").json()["status_url"])
    assert again["job_id"] != first["job_id"] and again["status"] == "completed"
    assert (again["rows_read"], again["inserted"], again["updated"], again["rejected"]) == (14, 0, 0, 0)
    assert (again["already_committed"], again["already_committed_by"]) == (14, [first["job_id"]])
    assert again["rejects_by_rule"] == {} and again["chunks_committed"] == 0
    assert (again["job"]["rows_read"], again["job"]["inserted"], again["job"]["rejected"]) == (14, 6, 8)
    assert (first["inserted"], first["rejected"], first["already_committed"]) == (6, 8, 0)


@pytest.mark.usefixtures("served")
def test_import_from_a_url(file_server: tuple[str, Path], client: TestClient) -> None:
    # file_server allows loopback URLs before the client's app reads its settings
    base_url, folder = file_server
    (folder / "users.csv").write_bytes((DATA / "users.csv").read_bytes())
    accepted = client.post("/v1/imports", json={"resource": "users", "url": f"{base_url}/users.csv"})
    assert accepted.status_code == 202, accepted.text
    job = finished(client, accepted.json()["status_url"])
    assert (job["status"], job["rows_read"], job["inserted"], job["rejected"]) == ("completed", 14, 6, 8)
    assert job["source"] == f"{base_url}/users.csv"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"resource": "users", "url": "http://127.0.0.1:9/users.csv"}, 400, "invalid_parameter"),
        ({"resource": "users", "url": "http://169.254.169.254/latest/meta-data/x.csv"}, 400, "invalid_parameter"),
        ({"resource": "users", "url": "file:///etc/passwd.csv"}, 400, "invalid_parameter"),
        ({"resource": "users", "url": "https://93.184.215.14/users"}, 400, "invalid_parameter"),  # no format
        ({"resource": "widgets", "url": "https://93.184.215.14/w.csv"}, 400, "invalid_parameter"),
        ({"resource": "users", "url": "https://93.184.215.14/w.csv", "format": "xml"}, 400, "invalid_parameter"),
        ({"url": "https://93.184.215.14/users.csv"}, 422, "invalid_request"),
    ],
)
def test_refused_import_requests_get_a_json_error_and_start_nothing(
    client: TestClient, body: dict, status: int, code: str
) -> None:
    answer = client.post("/v1/imports", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code and error["message"]
    assert "Traceback" not in answer.text


def test_refused_uploads(client: TestClient, settings_env: Callable[..., None]) -> None:
    unknown = client.post("/v1/imports", files={"file": ("u.csv", b"id\n1\n")}, data={"resource": "widgets"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, "invalid_parameter")
    no_file = client.post("/v1/imports", files={"resource": (None, "users")})
    assert no_file.status_code == 422
    wrong_type = client.post("/v1/imports", content=b"id\n", headers={"content-type": "text/csv"})
    assert wrong_type.status_code == 415
    settings_env(BULKFLOW_MAX_SOURCE_BYTES="100")
    with TestClient(create_app(Settings())) as limited:  # an app reads its settings when created
        too_large = upload(limited, DATA / "users.csv", "users")
    assert (too_large.status_code, too_large.json()["error"]["code"]) == (413, "too_large")


def test_a_compressed_upload_is_held_to_the_limit_by_what_it_expands_to(
    client: TestClient, settings_env: Callable[..., None]
) -> None:
    """A 1 MiB limit and a gzip of a few hundred KB that expands to 200 MB: 413 before any
    job exists, and nothing stored."""
    import gzip

    header = b"id,email,role\n"
    bomb = gzip.compress(header + b"x" * (200 << 20), compresslevel=9)
    assert len(bomb) < 1 << 20
    settings_env(BULKFLOW_MAX_SOURCE_BYTES=str(1 << 20))
    settings = Settings()
    uploads = Path(settings.landing_root()) / "uploads"
    before = _stored(uploads)
    with TestClient(create_app(settings)) as limited:
        answer = limited.post("/v1/imports", files={"file": ("users.csv.gz", bomb)}, data={"resource": "users"})
        garbage = limited.post(
            "/v1/imports", files={"file": ("users.csv.gz", b"not gzip at all")}, data={"resource": "users"}
        )
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "too_large"), answer.text
    assert "larger than the 1048576 byte limit" in answer.json()["error"]["message"]
    assert (garbage.status_code, garbage.json()["error"]["code"]) == (422, "invalid_input"), garbage.text
    assert _stored(uploads) == before  # nothing stored, not even in part


def test_a_failed_jobs_upload_is_removed_and_serve_shows_why_in_a_line(
    client: TestClient, tmp_path: Path, served: Callable[[], str], prefect_api: str
) -> None:
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("id,email,role\nu1,caf\u00e9@example.com,reader\n".encode("latin-1"))
    uploads = Path(Settings().landing_root()) / "uploads"
    before = _stored(uploads)
    job = finished(client, upload(client, latin1, "users").json()["status_url"])
    assert job["status"] == "failed" and "not valid UTF-8" in job["error"]
    assert _stored(uploads) == before  # stored for the run, removed once it failed on its content
    # `bulkflow serve`'s console: the reason on the run's line, no traceback; the run's log in the API keeps it
    deadline = time.monotonic() + 30
    while "Flow run 'import-users-latin1.csv' - Finished in state Failed(" not in served():
        assert time.monotonic() < deadline, served()[-3000:]
        time.sleep(0.5)
    finished_line = next(
        line for line in served().splitlines() if "'import-users-latin1.csv' - Finished in state Failed(" in line
    )
    assert "not valid UTF-8" in finished_line
    assert "Traceback" not in served()
    import httpx

    body = {"logs": {"flow_run_id": {"any_": [job["job_id"]]}}, "limit": 200}
    logs = httpx.post(f"{prefect_api}/logs/filter", json=body, timeout=10).raise_for_status().json()
    assert any("Traceback" in log["message"] for log in logs)
    kept = finished(client, upload(client, DATA / "users.csv", "users").json()["status_url"])
    import hashlib

    stored_as = hashlib.sha256((DATA / "users.csv").read_bytes()).hexdigest() + ".csv"
    assert kept["status"] == "completed" and stored_as in _stored(uploads)  # a loaded upload stays (stored once)


def _stored(uploads: Path) -> set[str]:
    """The files stored under the uploads folder (earlier tests' uploads stay there)."""
    return {p.name for p in uploads.iterdir()} if uploads.exists() else set()


def test_unknown_jobs_are_404(client: TestClient) -> None:
    for url in (
        "/v1/imports/not-a-uuid",
        "/v1/imports/00000000-0000-0000-0000-000000000000",
        "/v1/exports/00000000-0000-0000-0000-000000000000",
    ):
        answer = client.get(url)
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")


def test_streamed_export_has_one_line_per_row(client: TestClient) -> None:
    load_samples()
    for resource in ("users", "articles", "comments"):
        with client.stream("GET", f"/v1/exports?resource={resource}") as answer:
            assert answer.headers["content-type"] == "application/x-ndjson"
            lines = [json.loads(line) for line in answer.iter_lines() if line]
        assert len(lines) == sql(f"SELECT count(*) FROM {resource}")[0][0] > 0
    admins = client.get("/v1/exports?resource=users&format=csv&role=admin&fields=id,email")
    assert admins.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(admins.text)))
    assert rows[0] == ["id", "email"] and len(rows) - 1 == sql("SELECT count(*) FROM users WHERE role = 'admin'")[0][0]


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("resource=users&role=boss", 400, "invalid_parameter"),
        ("resource=users&fields=id,password", 400, "invalid_parameter"),
        ("resource=users&status=draft", 400, "invalid_parameter"),
        ("resource=users&colour=red", 400, "invalid_parameter"),
        ("resource=users&format=xml", 400, "invalid_parameter"),
        ("resource=widgets", 400, "invalid_parameter"),
        ("resource=users&limit=-1", 400, "invalid_parameter"),
        ("format=csv", 422, "invalid_request"),
        ("resource=users&limit=many", 422, "invalid_request"),
    ],
)
def test_bad_export_parameters_are_refused_before_streaming(
    client: TestClient, query: str, status: int, code: str
) -> None:
    answer = client.get(f"/v1/exports?{query}")
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text


@pytest.mark.usefixtures("served")
def test_async_csv_export_of_admins_downloads_with_a_header_and_one_line_per_admin(client: TestClient) -> None:
    load_samples()
    accepted = client.post(
        "/v1/exports",
        json={"resource": "users", "format": "csv", "filters": {"role": "admin"}, "fields": ["id", "email"]},
    )
    assert accepted.status_code == 202, accepted.text
    job = finished(client, accepted.json()["status_url"])
    assert job["status"] == "completed", job
    download = client.get(job["download_url"])
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(download.text)))
    admins = sql("SELECT id, email FROM users WHERE role = 'admin' ORDER BY id")
    assert rows[0] == ["id", "email"] and [tuple(r) for r in rows[1:]] == [tuple(a) for a in admins]
    assert job["manifest"]["rows"] == len(admins) and job["manifest"]["filters"] == {"role": "admin"}
    refused = client.post("/v1/exports", json={"resource": "users", "filters": {"role": "boss"}})
    assert refused.status_code == 400
    first_two = client.post("/v1/exports", json={"resource": "users", "format": "csv", "fields": ["id"], "limit": 2})
    limited = finished(client, first_two.json()["status_url"])
    assert (limited["manifest"]["rows"], limited["manifest"]["limit"]) == (2, 2)
    ids = [row[0] for row in csv.reader(io.StringIO(client.get(limited["download_url"]).text))]
    assert ids == ["id", *[row[0] for row in sql("SELECT id FROM users ORDER BY id LIMIT 2")]]


@pytest.mark.usefixtures("served")
def test_a_partitioned_export_job_lists_its_files_and_serves_each(client: TestClient, tmp_path: Path) -> None:
    load_samples()
    accepted = client.post("/v1/exports", json={"resource": "users", "format": "parquet", "partition_by": "role"})
    assert accepted.status_code == 202, accepted.text
    job = finished(client, accepted.json()["status_url"])
    assert job["status"] == "completed", job
    manifest = job["manifest"]
    assert manifest["partition_by"] == "role" and job["download_url"] is None
    roles = sorted(r for (r,) in sql("SELECT DISTINCT role FROM users"))
    assert [f["location"].split("/")[1] for f in manifest["files"]] == [f"role={r}" for r in roles]
    assert all(f["location"].startswith(manifest["location"] + "/") for f in manifest["files"])  # no server path
    for url, listed in zip(job["file_urls"], manifest["files"], strict=True):
        part = client.get(url)
        assert part.status_code == 200 and len(part.content) == listed["bytes"]
        target = tmp_path / listed["location"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(part.content)
    back = pl.scan_parquet(tmp_path / manifest["location"], hive_partitioning=True).collect()
    assert back.select(table("users").columns).sort("id").equals(table("users"))
    assert client.get(f"/v1/exports/{job['job_id']}/download").json()["error"]["code"] == "many_files"

    sql("DELETE FROM users WHERE id = 'usr_oscar'")
    incremental = client.post(
        "/v1/exports", json={"resource": "users", "format": "csv", "since": manifest["cursor"]}
    ).json()
    changes = finished(client, incremental["status_url"])
    assert changes["manifest"]["deleted"] == 1, changes
    deletes = client.get(changes["deletes_url"])
    assert deletes.status_code == 200 and deletes.text.splitlines()[1].startswith("usr_oscar,")


def test_a_partitioned_export_is_refused_as_a_stream_and_checked_before_a_job(client: TestClient) -> None:
    streamed = client.get("/v1/exports?resource=users&format=parquet&partition_by=role")
    assert streamed.status_code == 400 and "writes a directory of files" in streamed.json()["error"]["message"]
    job = client.post("/v1/exports", json={"resource": "users", "format": "csv", "partition_by": "role"})
    assert job.status_code == 400 and "use --format parquet" in job.json()["error"]["message"]


def test_one_status_per_kind_of_mistake_naming_what_is_allowed(client: TestClient) -> None:
    """An unknown resource, format or filter is a 400 that names what is allowed, the same
    words as the CLI's, whether it came in a query, a JSON body or a form."""
    resources = "unknown resource 'widgets'"
    answers = {
        "stream": client.get("/v1/exports?resource=widgets"),
        "stream alias": client.get("/v1/exports?resource_type=widgets"),
        "export job": client.post("/v1/exports", json={"resource": "widgets"}),
        "url import": client.post("/v1/imports", json={"resource": "widgets", "url": "https://93.184.215.14/w.csv"}),
        "upload": client.post("/v1/imports", files={"file": ("u.csv", b"id\n1\n")}, data={"resource": "widgets"}),
    }
    for name, answer in answers.items():
        assert answer.status_code == 400, (name, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "invalid_parameter" and error["message"].startswith(resources), (name, error)
        assert "users, articles, comments" in error["message"], (name, error)
    filters = "unknown filter 'colour' for users: allowed are id, role, active"
    for answer in (
        client.get("/v1/exports?resource=users&format=csv&colour=red"),
        client.post("/v1/exports", json={"resource": "users", "filters": {"colour": "red"}}),
    ):
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["message"].startswith(filters), answer.text
    formats = client.get("/v1/exports?resource=users&format=xml").json()["error"]["message"]
    assert formats == "unknown format 'xml': choose one of csv, ndjson, json, parquet"


@pytest.mark.usefixtures("served")
def test_clients_sending_other_field_names_get_through(client: TestClient) -> None:
    """What other clients of this API send: `resource_type` for `resource`, `file_url` for
    `url`, and `limit` on a streaming export; the OpenAPI schema names the aliases."""
    with (DATA / "users.csv").open("rb") as fh:
        uploaded = client.post("/v1/imports", files={"file": ("users.csv", fh)}, data={"resource_type": "users"})
    assert uploaded.status_code == 202, uploaded.text
    assert finished(client, uploaded.json()["status_url"])["status"] == "completed"
    for body in (
        {"resource_type": "articles", "file_url": "http://127.0.0.1:9/a.csv"},
        {"resource": "articles", "file_url": "http://127.0.0.1:9/a.csv"},
    ):
        # read as a URL import: refused for its address (loopback), not for missing fields
        refused = client.post("/v1/imports", json=body)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_parameter"), refused.text
        assert "internal address 127.0.0.1" in refused.json()["error"]["message"]
        form = client.post(
            "/v1/imports", files={"resource_type": (None, "articles"), "file_url": (None, body["file_url"])}
        )
        assert "internal address 127.0.0.1" in form.json()["error"]["message"], form.text
    streamed = client.get("/v1/exports?resource_type=users&format=csv&limit=2&fields=id")
    assert streamed.status_code == 200, streamed.text
    ids = [row[0] for row in csv.reader(io.StringIO(streamed.text))]
    assert ids == ["id", *[row[0] for row in sql("SELECT id FROM users ORDER BY id LIMIT 2")]]
    job = client.post("/v1/exports", json={"resource_type": "users", "format": "csv"})
    assert job.status_code == 202, job.text
    assert finished(client, job.json()["status_url"])["status"] == "completed"
    spec = client.get("/openapi.json").json()
    stream_resource = next(p for p in spec["paths"]["/v1/exports"]["get"]["parameters"] if p["name"] == "resource")
    assert "resource_type" in stream_resource["description"]
    export_body = spec["components"]["schemas"]["ExportJobRequest"]["properties"]["resource"]
    import_body = spec["paths"]["/v1/imports"]["post"]["requestBody"]["content"]
    url_body = import_body["application/json"]["schema"]["properties"]
    assert export_body["x-aliases"] == url_body["resource"]["x-aliases"] == ["resource_type"]
    assert url_body["url"]["x-aliases"] == ["file_url"]
    assert import_body["multipart/form-data"]["schema"]["properties"]["resource"]["x-aliases"] == ["resource_type"]


def test_every_v1_route_needs_the_token_when_one_is_set(settings_env: Callable[..., None]) -> None:
    settings_env(API_TOKEN="s3cret")
    with TestClient(create_app(Settings())) as client:
        _check_token_is_needed(client)


def _check_token_is_needed(client: TestClient) -> None:
    for method, url in (
        ("GET", "/v1/exports?resource=users"),
        ("POST", "/v1/imports"),
        ("POST", "/v1/exports"),
        ("GET", "/v1/imports/00000000-0000-0000-0000-000000000000"),
    ):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            answer = client.request(method, url, headers=headers)
            assert (answer.status_code, answer.json()["error"]["code"]) == (401, "unauthorized"), (method, url)
    allowed = client.get("/v1/exports?resource=users", headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200


def test_ui_metrics_and_openapi(client: TestClient) -> None:
    from openapi_spec_validator import validate

    load_samples()
    ui = client.get("/ui")
    assert ui.status_code == 200 and "swagger-ui" in ui.text.lower()
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'bulkflow_rows_imported_total{resource="users"} 6.0' in text
    assert 'bulkflow_rows_rejected_total{resource="users"} 8.0' in text
    assert 'bulkflow_jobs_finished_total{kind="import",status="completed"}' in text
    assert "bulkflow_import_duration_seconds_count" in text
    document = client.get("/openapi.json").json()
    validate(document)
    assert {
        "/v1/imports",
        "/v1/imports/{job_id}",
        "/v1/imports/{job_id}/rejects",
        "/v1/exports",
        "/v1/exports/{job_id}",
        "/v1/exports/{job_id}/download",
        "/metrics",
    } <= set(document["paths"])


def test_postman_collection_is_generated_from_the_openapi_document() -> None:
    from api.postman import render

    assert (ROOT / "postman-collection.json").read_text() == render(), (
        "run: python -m api.postman > postman-collection.json"
    )


@pytest.mark.usefixtures("served")
def test_upload_format_comes_from_the_file_name_and_errors_name_the_users_file(client: TestClient) -> None:
    users = finished(client, upload(client, DATA / "users.csv", "users").json()["status_url"])
    assert users["status"] == "completed"
    articles = upload(client, DATA / "articles.ndjson", "articles")  # no format field: NDJSON by its name
    job = finished(client, articles.json()["status_url"])
    assert (job["status"], job["rows_read"], job["source_name"]) == ("completed", 12, "articles.ndjson")
    wrong = finished(client, upload(client, DATA / "users.csv", "comments").json()["status_url"])
    assert wrong["status"] == "failed"
    assert wrong["error"].startswith("users.csv lacks required column(s)"), wrong["error"]
    assert "Flow run encountered" not in wrong["error"] and "uploads/" not in wrong["error"]
