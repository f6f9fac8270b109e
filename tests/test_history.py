"""The load history: an entry for each import run that completed, rejected rows, failed, was
aborted or only predicted, and for each export job; the same from the CLI and the API."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from bulkflow.settings import Settings
from cli.app import app
from flows.export_flow import export_flow
from tests.helpers import DATA, import_file, sql

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


def test_every_import_and_export_is_in_the_history_with_its_outcome(
    tmp_path: Path, settings_env: Callable[..., None]
) -> None:
    settings_env(BULKFLOW_EXPORT_URL=str(tmp_path / "exports"))
    clean = tmp_path / "clean.csv"
    clean.write_text("id,email,name,role\nusr_a,a@example.com,A,reader\nusr_b,b@example.com,B,admin\n")
    completed = import_file("users", clean)
    rejected = import_file("users", DATA / "users.csv")
    predicted = import_file("users", clean, dry_run=True, idempotency_key="predict")
    with pytest.raises(Exception):  # noqa: B017 - the budget's own error; its entry is what is tested
        import_file("users", DATA / "users.csv", max_rejects=1, idempotency_key="budget")
    (tmp_path / "broken.csv").write_text("nothing,we,know\n1,2,3\n")
    with pytest.raises(Exception):  # noqa: B017 - the missing columns' error
        import_file("users", tmp_path / "broken.csv")
    exported = export_flow(resource="users", format="csv")

    result = CliRunner().invoke(app, ["history", "--json"])
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [e["status"] for e in entries] == ["failed", "aborted", "dry_run", "completed_with_rejects", "completed"]
    by_status = {e["status"]: e for e in entries}
    done = by_status["completed"]
    assert done["flow_run_id"] == completed.flow_run_id and done["source_name"] == "clean.csv"
    assert (done["rows_read"], done["inserted"], done["rejected"], done["via"]) == (2, 2, 0, "python")
    assert done["sha256"] and done["job_key"] == completed.job_key and done["first_error"] is None
    with_rejects = by_status["completed_with_rejects"]
    assert (with_rejects["rows_read"], with_rejects["rejected"]) == (rejected.rows_read, rejected.rejected)
    assert with_rejects["first_error"].startswith("line ")
    assert by_status["dry_run"]["inserted"] == predicted.inserted == 0 or by_status["dry_run"]["rows_read"] == 2
    assert "budget" in by_status["aborted"]["first_error"]
    assert "lacks required column" in by_status["failed"]["first_error"] and by_status["failed"]["rows_read"] == 0
    assert all(e["finished_at"] >= e["started_at"] and e["duration_s"] >= 0 for e in entries)

    only = json.loads(CliRunner().invoke(app, ["history", "--json", "--status", "completed"]).stdout)
    assert [e["flow_run_id"] for e in only] == [completed.flow_run_id]
    assert json.loads(CliRunner().invoke(app, ["history", "--json", "--resource", "articles"]).stdout) == []
    later = json.loads(CliRunner().invoke(app, ["history", "--json", "--since", "2999-01-01"]).stdout)
    assert later == []
    refused = CliRunner().invoke(app, ["history", "--status", "great"])
    assert refused.exit_code == 2 and "unknown status 'great'" in refused.output

    exports = json.loads(CliRunner().invoke(app, ["history", "--exports", "--json"]).stdout)
    assert [(e["job_id"], e["status"], e["rows"], e["via"]) for e in exports] == [
        (exported.job_id, "completed", exported.rows, "python")
    ]
    table = CliRunner().invoke(app, ["history"])
    assert table.exit_code == 0 and "completed_with_rejects" in table.output

    with TestClient(create_app(Settings())) as client:
        listed = client.get("/v1/imports", params={"status": "dry_run"})
        assert listed.status_code == 200 and [e["status"] for e in listed.json()] == ["dry_run"]
        assert client.get("/v1/imports", params={"limit": 2}).json() == entries[:2]
        assert client.get("/v1/exports/history").json() == exports
        bad = client.get("/v1/imports", params={"since": "yesterday"})
        assert bad.status_code == 400 and "cannot read since" in bad.text
    assert sql("SELECT count(*) FROM import_history")[0][0] == 5
