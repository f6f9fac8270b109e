"""Error budgets: a file over its budget stops early and leaves nothing behind (abort),
waits for an operator (pause: approve or abort, through the Prefect API), or goes on
flagged (continue)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.flow_runs import resume_flow_run
from typer.testing import CliRunner

from api.app import create_app
from bulkflow.errors import BudgetExceeded
from bulkflow.settings import Settings
from cli.app import app
from files.generate import GeneratorSpec, write_file
from tests.helpers import DATA, import_file, rejects_of, snapshot, sql, wait_for_event

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
ROWS, CHUNK = 2000, 200


@pytest.fixture()
def bad_file(tmp_path: Path) -> Path:
    """Users, a third of them invalid: over any small budget from the first chunk on."""
    path = tmp_path / "bad.csv"
    write_file(GeneratorSpec("users", rows=ROWS, invalid_share=0.33, seed=11), path)
    return path


def _loaded_users() -> None:
    import_file("users", DATA / "users.csv")


def test_abort_leaves_the_tables_as_they_were_and_keeps_the_rejects_read_so_far(
    bad_file: Path, prefect_api: str
) -> None:
    _loaded_users()
    before = snapshot()
    arguments = ["import", "users", str(bad_file), "--chunk-size", str(CHUNK), "--json"]
    result = CliRunner().invoke(app, [*arguments, "--max-reject-rate", "0.02", "--budget-min-rows", "300"])
    assert result.exit_code == 2, result.output
    failed = json.loads(result.stdout)
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and line.endswith("over the budget of 2%: nothing was applied"), line
    assert "% of the rows read so far were rejected" in line
    after = snapshot()
    for name, frame in before.items():
        assert after[name].equals(frame), name
    # it stopped early: the chunks up to the one that spent the budget (2 chunks for 300 rows)
    aborted = sql(
        "SELECT job_key, count(*), sum(rows_read) FROM import_chunks WHERE job_key LIKE '%:aborted:%' GROUP BY 1"
    )
    assert len(aborted) == 1 and aborted[0][1] == 2 and aborted[0][2] == 2 * CHUNK
    rejects = CliRunner().invoke(app, ["rejects", failed["flow_run_id"]])
    assert rejects.exit_code == 0 and len(rejects.stdout.splitlines()) == len(rejects_of(aborted[0][0])) > 0
    wait_for_event(
        prefect_api, "bulkflow.import.budget-exceeded", "bulkflow.import.users", lambda p: p["on_budget"] == "abort"
    )
    # the file's own job starts from the beginning next time
    report = import_file("users", bad_file, chunk_size=CHUNK)
    assert report.chunks_skipped == 0 and report.rows_read == ROWS


def test_a_reject_count_budget_aborts_too(bad_file: Path) -> None:
    with pytest.raises(BudgetExceeded, match="over the budget of 5 rejects: nothing was applied"):
        import_file("users", bad_file, chunk_size=CHUNK, max_rejects=5)
    assert sql("SELECT count(*) FROM users") == [(0,)]


def test_continue_goes_on_and_flags_the_run(bad_file: Path) -> None:
    report = import_file("users", bad_file, chunk_size=CHUNK, max_reject_rate=0.02, on_budget="continue")
    assert report.budget_exceeded is not None and report.budget_exceeded.endswith(": continued")
    assert not report.atomic and report.rows_read == ROWS and report.inserted > 0
    with TestClient(create_app(Settings())) as client:
        status = client.get(f"/v1/imports/{report.flow_run_id}")
    assert status.status_code == 200, status.text
    assert status.json()["budget_exceeded"] == report.budget_exceeded  # the API says it as the report does


def _paused_run_id(timeout: float = 120) -> str:
    paused = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(flow_run_filter=paused)
            if runs:
                return str(runs[0].id)
            time.sleep(0.5)
    raise AssertionError("no import paused")


def _import_in_background(path: Path, **options: Any) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["report"] = import_file("users", path, **options)
        except BaseException as error:  # noqa: BLE001 - the test reads what the import ended with
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("decision", ["approve", "abort"])
def test_pause_waits_for_an_operator_through_the_prefect_api(bad_file: Path, decision: str) -> None:
    options = {"chunk_size": CHUNK, "max_reject_rate": 0.02, "budget_min_rows": 300, "on_budget": "pause"}
    thread, outcome = _import_in_background(bad_file, **options)
    run_id = _paused_run_id()
    assert sql("SELECT count(*) FROM users") == [(0,)]  # paused: nothing applied yet
    resume_flow_run(run_id, run_input={"decision": decision})  # type: ignore[arg-type]  # the API takes the id as text too
    thread.join(timeout=180)
    if decision == "approve":
        report = outcome["report"]
        assert report.budget_exceeded.endswith(": approved by an operator") and report.atomic
        assert report.rows_read == ROWS and sql("SELECT count(*) FROM users") == [(report.inserted,)]
    else:
        assert isinstance(outcome["error"], BudgetExceeded)
        assert sql("SELECT count(*) FROM users") == [(0,)]


def test_a_pause_nobody_answers_aborts(bad_file: Path) -> None:
    with pytest.raises(BudgetExceeded, match="nothing was applied"):
        import_file("users", bad_file, chunk_size=CHUNK, max_rejects=5, on_budget="pause", budget_pause_timeout=3)
    assert sql("SELECT count(*) FROM users") == [(0,)]
