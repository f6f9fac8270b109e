"""Rejects back as records: `--rejects-of JOB` imports what a job rejected again, as a new
job; `bulkflow rejects JOB --as-source` writes them in the file's own format to resend."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from bulkflow.errors import ParameterError
from cli.app import app
from tests.helpers import DATA, import_file, load_samples, sql, table

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


def test_replaying_rejects_loads_the_rows_whose_authors_came_later(tmp_path: Path) -> None:
    _, articles, _ = load_samples()
    authors = [row[0] for row in sql("SELECT DISTINCT value FROM import_rejects WHERE rule = 'unknown_author'")]
    assert len(authors) == articles.rejects_by_rule["unknown_author"] == 2
    late = tmp_path / "late-authors.csv"
    late.write_text("id,email,role\n" + "".join(f"{a},{a}@example.com,author\n" for a in authors))
    import_file("users", late)
    held = table("articles").height
    replay = import_file("articles", "", rejects_of=articles.flow_run_id)
    assert replay.job_key != articles.job_key and replay.source_name == f"rejects-of-{articles.flow_run_id}"
    assert replay.rows_read == articles.rejected  # every rejected record, once
    assert replay.inserted == 2 and "unknown_author" not in replay.rejects_by_rule
    assert replay.rejected == articles.rejected - 2
    assert table("articles").height == held + 2


def test_a_replay_takes_no_source_too_and_needs_rejects(tmp_path: Path) -> None:
    users, _, _ = load_samples()
    with pytest.raises(ParameterError, match="not both"):
        import_file("users", DATA / "users.csv", rejects_of=users.job_key)
    valid = tmp_path / "valid.csv"
    valid.write_text("id,email,role\nusr_new,new@example.com,reader\n")
    clean = import_file("users", valid)
    with pytest.raises(ParameterError, match="rejected no record"):
        import_file("users", "", rejects_of=clean.job_key)
    result = CliRunner().invoke(app, ["import", "articles", "--rejects-of", users.job_key])
    assert result.exit_code == 2 and "is an import of users, not of articles" in result.stderr


def test_rejects_as_source_are_the_records_in_their_own_format(tmp_path: Path) -> None:
    users, articles, _ = load_samples()
    fixed = tmp_path / "fixed.csv"
    result = CliRunner().invoke(app, ["rejects", users.job_key, "--as-source", "-o", str(fixed)])
    assert result.exit_code == 0, result.output
    records = pl.read_csv(fixed, infer_schema=False)
    assert records.height == users.rejected and records.columns[:3] == ["id", "email", "name"]
    assert "usr_frank" in records.get_column("id").to_list()  # line 8: frank@bar, an invalid email
    again = import_file("users", fixed, idempotency_key="resent")
    assert again.rows_read == users.rejected and again.inserted == 0
    # refused for the same reasons, but for their keys: the first occurrences are in the table now
    keys = {"duplicate_id", "duplicate_email", "email_taken"}
    assert {rule: n for rule, n in again.rejects_by_rule.items() if rule not in keys} == {
        rule: n for rule, n in users.rejects_by_rule.items() if rule not in keys
    }
    # NDJSON: the rejected lines as they were sent
    ndjson = CliRunner().invoke(app, ["rejects", articles.job_key, "--as-source"])
    lines = (DATA / "articles.ndjson").read_text().splitlines()
    rejected = sorted({row[0] for row in sql(f"SELECT line FROM import_rejects WHERE job_key = '{articles.job_key}'")})
    assert ndjson.stdout.splitlines() == [lines[line - 1] for line in rejected]


@pytest.mark.usefixtures("served")
def test_the_api_replays_the_rejects_of_an_import() -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from bulkflow.settings import Settings
    from tests.test_api import finished

    _, articles, _ = load_samples()
    with TestClient(create_app(Settings())) as client:
        accepted = client.post("/v1/imports", json={"resource": "articles", "rejects_of": articles.flow_run_id})
        assert accepted.status_code == 202, accepted.text
        job = finished(client, accepted.json()["status_url"])
        both = client.post("/v1/imports", json={"resource": "articles", "url": "https://x.io/a.csv", "rejects_of": "x"})
    assert (job["status"], job["rows_read"], job["source_name"]) == (
        "completed",
        articles.rejected,
        f"rejects-of-{articles.flow_run_id}",
    )
    assert both.status_code == 422 and "one of them" in both.text
