"""`--mode insert` and `--mode update`: what each refuses, with which rule, and what it
leaves in the table; the same from the command line and the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from bulkflow.settings import Settings
from cli.app import app
from decisions.checks import database_facts
from decisions.decide import decide
from decisions.keys import SeenKeys
from decisions.rules import check_records
from files.staging import stage_source
from schemas import get_resource
from schemas.columns import LINE
from schemas.parameters import ImportOptions, WriteMode
from schemas.resource import RuleContext
from tasks.jobs import open_job
from tasks.load import apply_chunk
from tests.helpers import DATA, import_file, rejects_of, sql, table
from tests.test_api import finished

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
USERS = get_resource("users")
PARTNER = (
    "id,email,name,role\n"
    "usr_alice,alice@example.com,Alice Changed,admin\n"  # line 2: in the table
    "usr_new,new@example.com,New,reader\n"  # line 3: new
    "usr_other,BOB@example.com,Other,reader\n"  # line 4: a new id, a key usr_bob holds
    ",dave@example.com,Dave Changed,reader\n"  # line 5: id-less, its key is in the table
    ",nobody@example.com,Nobody,reader\n"  # line 6: id-less, a key nobody holds
)


@pytest.fixture()
def partner_file(tmp_path: Path) -> Path:
    import_file("users", DATA / "users.csv")
    path = tmp_path / "partner.csv"
    path.write_text(PARTNER)
    return path


def _rules(report_key: str) -> list[tuple[int, str, str]]:
    return [(line, field, rule) for line, field, rule, *_ in rejects_of(report_key)]


def test_insert_only_adds_new_rows(partner_file: Path) -> None:
    before = table("users")
    report = import_file("users", partner_file, mode="insert")
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (2, 0, 0, 3)
    assert report.mode == "insert" and report.job_key.endswith(":insert")
    assert _rules(report.job_key) == [
        (2, "id", "already_exists"),
        (4, "email", "already_exists"),
        (5, "email", "already_exists"),
    ]
    after = table("users")
    assert after.filter(pl.col("id").is_in(before.get_column("id").implode())).equals(before)  # none touched
    added = set(after.get_column("email").to_list()) - set(before.get_column("email").to_list())
    assert added == {"new@example.com", "nobody@example.com"}


def test_update_only_changes_existing_rows(partner_file: Path) -> None:
    before = table("users")
    report = import_file("users", partner_file, mode="update")
    assert (report.inserted, report.updated, report.unchanged, report.rejected) == (0, 2, 0, 3)
    assert _rules(report.job_key) == [(3, "id", "not_found"), (4, "id", "not_found"), (6, "email", "not_found")]
    after = table("users")
    assert after.height == before.height
    names = dict(zip(after.get_column("email").to_list(), after.get_column("name").to_list()))
    assert (names["alice@example.com"], names["dave@example.com"]) == ("Alice Changed", "Dave Changed")


def test_a_row_the_mode_refuses_claims_no_key(tmp_path: Path) -> None:
    """First *accepted* occurrence wins: a refused row leaves its id to a later line."""
    import_file("users", DATA / "users.csv")
    path = tmp_path / "twice.csv"
    path.write_text("id,email,role\nusr_zed,alice@example.com,reader\nusr_zed,zed@example.com,reader\n")
    report = import_file("users", path, mode="insert")
    assert (report.inserted, report.rejected) == (1, 1)
    assert _rules(report.job_key) == [(2, "email", "already_exists")]


def test_a_mode_is_its_own_job_and_a_key_keeps_its_mode(partner_file: Path) -> None:
    upsert = import_file("users", partner_file)
    inserted = import_file("users", partner_file, mode="insert")
    assert inserted.job_key != upsert.job_key and inserted.chunks_skipped == 0
    import_file("users", partner_file, idempotency_key="partner-7")
    result = CliRunner().invoke(
        app, ["import", "users", str(partner_file), "--idempotency-key", "partner-7", "--mode", "update"]
    )
    assert result.exit_code == 2
    assert "already names an import with --mode upsert" in result.stderr.strip().splitlines()[-1]


def test_the_command_line_takes_the_mode(partner_file: Path) -> None:
    result = CliRunner().invoke(app, ["import", "users", str(partner_file), "--mode", "insert", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["mode"], report["inserted"], report["rejects_by_rule"]) == ("insert", 2, {"already_exists": 3})
    unknown = CliRunner().invoke(app, ["import", "users", str(partner_file), "--mode", "merge"])
    assert unknown.exit_code == 2 and "merge" in unknown.output


@pytest.mark.parametrize(("mode", "rule"), [("insert", "already_exists"), ("update", "not_found")])
def test_a_row_another_writer_changes_after_the_check_is_refused_by_the_mode(
    tmp_path: Path, mode: WriteMode, rule: str
) -> None:
    sql("INSERT INTO users (id, email, role) VALUES ('u2', 'two@example.com', 'reader')")
    settings = Settings()
    path = tmp_path / "users.csv"
    path.write_text("id,email,role\nu1,one@example.com,reader\nu2,two@example.com,admin\n")
    job = open_job.fn(settings, USERS, stage_source(str(path), settings=settings), ImportOptions(mode=mode), None)
    raw = pl.DataFrame({LINE: [2, 3], "id": ["u1", "u2"], "email": ["one@example.com", "two@example.com"]})
    check = check_records(USERS, RuleContext.of(settings), 0, raw.with_columns(pl.lit("reader").alias("role")))
    decided = decide(USERS, check, database_facts(settings, job.scope, USERS, check, committed=False), SeenKeys(), mode)
    assert decided.rows.height == 1  # insert: u1 only; update: u2 only
    # meanwhile, outside bulkflow: the accepted row appears (insert) or goes away (update)
    if mode == "insert":
        sql("INSERT INTO users (id, email, role) VALUES ('u1', 'one@example.com', 'reader')")
    else:
        sql("DELETE FROM users WHERE id = 'u2'")
    result = apply_chunk(settings, job.ledger(None, None), USERS, decided)
    assert (result.inserted, result.updated, result.rejected) == (0, 0, 2)
    assert {r for _, _, r, *_ in rejects_of(job.key)} == {rule}


@pytest.fixture()
def client() -> Iterator[TestClient]:
    with TestClient(create_app(Settings())) as test_client:
        yield test_client


@pytest.mark.usefixtures("served")
def test_the_api_takes_the_mode_and_the_dry_run_as_form_fields(partner_file: Path, client: TestClient) -> None:
    with partner_file.open("rb") as fh:
        form = {"resource": "users", "mode": "insert", "dry_run": "true"}
        accepted = client.post("/v1/imports", files={"file": (partner_file.name, fh)}, data=form)
    assert accepted.status_code == 202, accepted.text
    job = finished(client, accepted.json()["status_url"])
    assert (job["status"], job["mode"], job["dry_run"]) == ("completed", "insert", True)
    assert (job["inserted"], job["rejects_by_rule"]) == (2, {"already_exists": 3})
    assert sql("SELECT count(*) FROM users WHERE email = 'new@example.com'") == [(0,)]  # a dry run
    with partner_file.open("rb") as fh:
        refused = client.post(
            "/v1/imports", files={"file": (partner_file.name, fh)}, data={"resource": "users", "mode": "merge"}
        )
    assert refused.status_code == 422 and "mode" in refused.text


def test_the_api_refuses_an_unknown_mode_in_a_json_body(client: TestClient) -> None:
    answer = client.post("/v1/imports", json={"resource": "users", "url": "https://x.io/u.csv", "mode": "merge"})
    assert answer.status_code == 422 and "mode" in answer.text


@pytest.mark.usefixtures("served")
def test_the_api_takes_a_budget_and_says_why_the_job_failed(client: TestClient) -> None:
    with (DATA / "users.csv").open("rb") as fh:
        form = {"resource": "users", "max_reject_rate": "0.1", "budget_min_rows": "5"}
        accepted = client.post("/v1/imports", files={"file": ("users.csv", fh)}, data=form)
    assert accepted.status_code == 202, accepted.text
    job = finished(client, accepted.json()["status_url"])
    assert job["status"] == "failed" and job["retryable"] is False
    assert job["error"] == "57.1% of the rows read so far were rejected, over the budget of 10%: nothing was applied"
    assert job["rejected"] == 8 and sql("SELECT count(*) FROM users") == [(0,)]  # the rejects kept, nothing applied
