"""Exports: every format round-trips through our import; filters, fields, refusals; the flow."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest
from prefect.client.schemas.schedules import CronSchedule
from typer.testing import CliRunner

from bulkflow.db import connect
from bulkflow.errors import ParameterError
from bulkflow.settings import Settings
from cli.app import app
from decisions.exports import EXPORT_FORMATS, ExportRequest, parse_where, plan_export
from flows.export_flow import export_flow
from flows.import_flow import import_flow
from schemas.parameters import ResourceName
from schemas.resource import RuleContext
from tasks.export import stream_export
from tasks.export_jobs import MANIFEST_SUFFIX, find_export
from tests.helpers import load_samples, reset_imports, snapshot, sql


def plan(*args: object, **kwargs: object) -> ExportRequest:
    """plan_export with the rules configured as an entry point would."""
    return plan_export(*args, **kwargs, context=RuleContext.of(Settings()))  # type: ignore[arg-type]


pytestmark = pytest.mark.usefixtures("prefect_api", "db")
ODD = ["Zoë “quoted”, comma", 'a "b" c', "line one\nline two", "tab\there", "  leading", "emoji 🎉", "back\\slash"]


def add_odd_rows(folder: Path) -> None:
    """Rows with odd strings, unicode, empty tags and nulls, through our own import."""
    lines = [
        json.dumps(
            {
                "id": f"odd_{i}",
                "email": f"odd{i}@example.com",
                "name": text,
                "role": "reader",
                "active": None if i % 2 else True,
                "created_at": "2024-02-29T23:59:59.123456+05:30",
            }
        )
        for i, text in enumerate(ODD)
    ]
    articles = [
        json.dumps(
            {
                "id": f"art_odd_{i}",
                "slug": f"odd-{i}",
                "title": text,
                "body": text,
                "author_id": f"odd_{i}",
                "tags": [text, ""] if i % 2 else [],
                "status": "published",
                "published_at": "2024-01-01",
            }
        )
        for i, text in enumerate(ODD)
    ]
    users_file, articles_file = folder / "odd_users.ndjson", folder / "odd_articles.ndjson"
    users_file.write_text("\n".join(lines) + "\n")
    articles_file.write_text("\n".join(articles) + "\n")
    assert import_flow(resource="users", source=str(users_file)).rejected == 0
    assert import_flow(resource="articles", source=str(articles_file)).rejected == 0


@pytest.mark.parametrize("format", EXPORT_FORMATS)
def test_every_format_round_trips_exactly(format: str, tmp_path: Path) -> None:
    load_samples()
    add_odd_rows(tmp_path)
    before = snapshot()
    files = {}
    for resource in ("users", "articles", "comments"):
        files[resource] = tmp_path / f"{resource}.{format}"
        with open(files[resource], "wb") as sink:
            stats = stream_export(plan(resource, format), sink, settings=Settings())
        assert stats.rows == before[resource].height
    reset_imports()
    for resource, path in files.items():
        report = import_flow(resource=cast(ResourceName, resource), source=str(path))
        assert report.rejected == 0, report.rejects_by_rule
    after = snapshot()
    for resource in before:
        assert after[resource].equals(before[resource]), resource


def test_filters_and_fields() -> None:
    load_samples()
    buffer = io.BytesIO()
    stream_export(plan("users", "csv", parse_where(["role=admin"]), ["id", "email"]), buffer, settings=Settings())
    assert buffer.getvalue().decode().splitlines() == ["id,email", "usr_alice,alice@example.com"]
    buffer = io.BytesIO()
    request = plan("articles", "ndjson", {"status": "published", "published_since": "2024-03-02"}, ["slug"])
    stream_export(request, buffer, settings=Settings())
    assert [json.loads(line) for line in buffer.getvalue().splitlines()] == [{"slug": "unicode-title"}]
    buffer = io.BytesIO()
    stream_export(plan("users", "json", {"active": "false"}, ["id"]), buffer, settings=Settings())
    assert json.loads(buffer.getvalue()) == [{"id": "usr_carol"}, {"id": "usr_oscar"}]
    buffer = io.BytesIO()
    stream_export(plan("comments", "json", {"user_id": "nobody"}), buffer, settings=Settings())
    assert json.loads(buffer.getvalue()) == []


@pytest.mark.parametrize(
    ("resource", "filters", "fields", "message"),
    [
        ("users", {"colour": "red"}, None, "unknown filter 'colour' for users: allowed are id, role, active"),
        ("users", {"role": "manager"}, None, "role must be one of admin, author, editor, reader"),
        ("users", {"active": "maybe"}, None, "active must be true or false"),
        ("users", {"updated_since": "last week"}, None, "must be an ISO-8601 timestamp"),
        ("articles", {"status": "pending"}, None, "status must be one of draft, published, archived"),
        ("articles", {"role": "admin"}, None, "unknown filter 'role'"),
        ("users", {}, ["id", "password"], "unknown field(s) password"),
        ("widgets", {}, None, "unknown resource"),
    ],
)
def test_refusals_name_what_is_allowed(resource: str, filters: dict, fields: list | None, message: str) -> None:
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan(resource, "ndjson", filters, fields)


def test_filter_values_are_bound_parameters_not_sql() -> None:
    load_samples()
    buffer = io.BytesIO()
    stream_export(plan("users", "ndjson", {"id": "x' OR '1'='1"}), buffer, settings=Settings())
    assert buffer.getvalue() == b""


def test_cli_export_to_stdout_and_refusal() -> None:
    load_samples()
    runner = CliRunner()
    result = runner.invoke(app, ["export", "users", "--where", "role=admin", "--fields", "id,email", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["id,email", "usr_alice,alice@example.com"]
    first_two = runner.invoke(app, ["export", "users", "--fields", "id", "--format", "csv", "--limit", "2"])
    assert first_two.stdout.splitlines() == ["id", *[row[0] for row in sql("SELECT id FROM users ORDER BY id LIMIT 2")]]
    refused = runner.invoke(app, ["export", "users", "--where", "colour=red"])
    assert refused.exit_code == 2
    assert refused.stderr.strip().startswith("error: unknown filter 'colour'")
    assert len(refused.stderr.strip().splitlines()) == 1


def test_export_flow_writes_a_manifest_matching_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BULKFLOW_EXPORT_URL", str(tmp_path / "exports"))
    load_samples()
    manifest = export_flow(resource="users", format="csv", filters={"active": "true"}, fields=["id", "email"])
    path = Path(manifest.location)
    assert path.parent == tmp_path / "exports" and str(manifest.job_id) in path.name
    content = path.read_bytes()
    assert manifest.sha256 == hashlib.sha256(content).hexdigest()
    assert manifest.bytes == len(content)
    assert manifest.rows == len(content.decode().splitlines()) - 1 == 4
    assert json.loads(Path(str(path) + MANIFEST_SUFFIX).read_text())["sha256"] == manifest.sha256
    job = find_export(Settings(), str(manifest.job_id))
    assert job is not None and job.manifest is not None
    assert job.manifest.model_dump(exclude={"rows_per_s"}) == manifest.model_dump(exclude={"rows_per_s"})
    assert find_export(Settings(), "00000000-0000-0000-0000-000000000000") is None


def test_nightly_deployment_definition() -> None:
    from deployments.catalog import by_address
    from tasks.runs import NIGHTLY

    deployment = by_address(NIGHTLY, Settings())
    assert deployment.name == "nightly-parquet"
    assert deployment.schedules
    schedule = deployment.schedules[0].schedule
    assert isinstance(schedule, CronSchedule) and schedule.cron == "0 2 * * *"


@pytest.mark.slow
def test_a_reader_closing_stdout_ends_the_export_quietly() -> None:
    """`bulkflow export users --format csv | head -2`: a real pipe whose reader leaves after
    two lines, long before the export is done."""
    import os
    import subprocess
    import sys

    sql(
        "INSERT INTO users (id, email, name, role, active, created_at, updated_at) "
        "SELECT 'u' || n, 'u' || n || '@example.com', 'User ' || n, 'reader', true, now(), now() "
        "FROM generate_series(1, 200000) AS n"
    )
    export = subprocess.Popen(
        [sys.executable, "-m", "cli", "export", "users", "--format", "csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )
    assert export.stdout is not None and export.stderr is not None
    head = [export.stdout.readline() for _ in range(2)]
    export.stdout.close()
    stderr = export.stderr.read().decode()
    assert export.wait(timeout=120) == 0, stderr
    assert head[0].startswith(b"id,") and head[1].startswith(b"u")
    assert stderr == "", stderr


def _many_users(count: int) -> None:
    """`count` users written straight into the table (the export's side is under test)."""
    reset_imports()
    sql(
        "INSERT INTO users (id, email, name, role, active, created_at) "
        f"SELECT 'u' || g, 'u' || g || '@example.com', 'User ' || g, CASE WHEN g % 3 = 0 THEN 'admin' ELSE 'reader' END, "
        f"g % 2 = 0, timestamptz '2024-01-01' + g * interval '1 minute' FROM generate_series(1, {count}) g"
    )
    sql("ANALYZE users")


@pytest.mark.parametrize("format", ["csv", "ndjson"])
def test_an_export_over_several_connections_is_the_file_of_one(format: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _many_users(5000)
    monkeypatch.setattr("tasks.export._PARALLEL_FROM_ROWS", 0)  # a table this small is read over one otherwise
    files, stats = {}, {}
    for connections in (1, 2, 3):
        buffer = io.BytesIO()
        request = plan("users", format, {"role": "reader"} if format == "csv" else {})
        stats[connections] = stream_export(request, buffer, settings=Settings(BULKFLOW_EXPORT_CONNECTIONS=connections))
        files[connections] = buffer.getvalue()
    assert [stats[n].connections for n in (1, 2, 3)] == [1, 2, 3]
    assert files[1] == files[2] == files[3] and stats[1].rows == stats[2].rows == stats[3].rows
    assert stats[1].rows == (3334 if format == "csv" else 5000)


def test_an_export_over_several_connections_is_one_view_of_the_table_while_an_import_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every connection reads the snapshot the first exported: rows an import commits after
    the export began (here: changed, added and deleted, as an upsert and a replace do, at the
    moment the second connection opens) are not in the file, whichever range they fall in."""
    _many_users(4000)
    monkeypatch.setattr("tasks.export._PARALLEL_FROM_ROWS", 0)
    expected = io.BytesIO()
    stream_export(plan("users", "csv"), expected, settings=Settings(BULKFLOW_EXPORT_CONNECTIONS=1))
    import tasks.export

    joined = tasks.export._joined

    @contextmanager
    def joined_after_an_import_committed(settings: Settings, snapshot: str) -> Iterator[object]:
        with connect(Settings()) as conn, conn.cursor() as cur:
            cur.execute("UPDATE users SET name = 'changed' WHERE id IN ('u1', 'u2000', 'u3999')")
            cur.execute(
                "INSERT INTO users (id, email, name, role) VALUES ('u0', 'new@example.com', 'new', 'reader'), "
                "('u99999', 'new2@example.com', 'new', 'reader')"
            )
            cur.execute("DELETE FROM users WHERE id IN ('u10', 'u3000')")
            conn.commit()
        with joined(settings, snapshot) as cur:
            yield cur

    monkeypatch.setattr(tasks.export, "_joined", joined_after_an_import_committed)
    during = io.BytesIO()
    stats = stream_export(plan("users", "csv"), during, settings=Settings(BULKFLOW_EXPORT_CONNECTIONS=2))
    assert stats.connections == 2 and during.getvalue() == expected.getvalue()
    assert sql("SELECT count(*) FROM users WHERE name = 'changed'")[0][0] == 3  # the import did commit
