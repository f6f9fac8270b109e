"""What operators see in Prefect: runs named after their file, tagged with their resource
and how they were started, per-file artifact keys, and events for automations."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import httpx
import pytest
from prefect import tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from flows.export_flow import export_flow
from flows.import_flow import import_flow
from schemas.parameters import ImportOptions
from tasks.report import artifact_key
from tasks.run_labels import run_tags
from tests.conftest import ROOT
from tests.helpers import DATA, wait_for_event

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


def _run(run_id: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(run_id))


def test_an_import_run_is_named_and_tagged_after_what_it_does(tmp_path: Path) -> None:
    partner = tmp_path / "partner-42.csv"
    partner.write_bytes((DATA / "users.csv").read_bytes())
    with tags(*run_tags("users", via="cli")):
        report = import_flow(resource="users", source=str(partner))
    run = _run(str(report.flow_run_id))
    assert run.name == "import-users-partner-42.csv"
    assert {"bulkflow", "resource:users", "via:cli"} <= set(run.tags)
    assert report.source_name == "partner-42.csv"
    renamed = import_flow(
        resource="articles",
        source=str(DATA / "articles.ndjson"),
        options=ImportOptions(source_name="Partner articles (May).ndjson"),
    )
    run = _run(str(renamed.flow_run_id))
    assert run.name == "import-articles-Partner articles (May).ndjson"
    assert {"bulkflow", "resource:articles", "via:python"} <= set(run.tags)  # no caller said how: from Python


def test_task_runs_are_named_after_what_they_touch() -> None:
    report = import_flow(resource="users", source=str(DATA / "users.csv"), options=ImportOptions(chunk_size=5))
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(report.flow_run_id)])))
    # a chunk's check and load are plain calls on the run's threads, not task runs
    assert {run.name for run in runs} == {"stage-users.csv", "open-job-users", "close-job-users"}
    assert report.chunks == 3


def test_artifact_keys_name_the_resource_and_the_file() -> None:
    assert artifact_key("import", "users", "Partner 42 (May).csv", "report") == "import-users-partner-42-may-csv-report"
    long = artifact_key("import", "users", "x" * 300, "report")
    assert len(long) <= 100 and long.endswith("-report")


def test_finished_imports_and_exports_emit_events(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BULKFLOW_ERROR_RATE_ALERT", "0.5")
    report = import_flow(resource="users", source=str(DATA / "users.csv"))  # 8 of 14 rejected: above 0.5
    ours: Callable[[dict[str, Any]], bool] = lambda payload: payload.get("flow_run_id") == report.flow_run_id  # noqa: E731
    completed = wait_for_event(prefect_api, "bulkflow.import.completed", "bulkflow.import.users", ours)
    assert completed["payload"]["job_key"] == report.job_key
    assert (completed["payload"]["rows_read"], completed["payload"]["rejected"]) == (14, 8)
    assert completed["resource"]["prefect.resource.name"] == "users.csv"
    wait_for_event(prefect_api, "bulkflow.import.high-error-rate", "bulkflow.import.users", ours)
    with pytest.raises(Exception, match="lacks required column"):
        import_flow(resource="comments", source=str(DATA / "users.csv"))
    failed = wait_for_event(
        prefect_api,
        "bulkflow.import.failed",
        "bulkflow.import.comments",
        lambda payload: "lacks required column" in payload.get("error", ""),
    )
    assert failed["payload"]["source_name"] == "users.csv"
    monkeypatch.setenv("BULKFLOW_EXPORT_URL", str(tmp_path / "exports"))
    manifest = export_flow(resource="users", format="csv")
    exported = wait_for_event(
        prefect_api,
        "bulkflow.export.completed",
        "bulkflow.export.users",
        lambda payload: payload.get("job_id") == manifest.job_id,
    )
    assert exported["payload"]["sha256"] == manifest.sha256


def test_the_example_automation_installs_with_one_command() -> None:
    from typer.testing import CliRunner

    from bulkflow.settings import Settings
    from cli.app import app
    from deployments.automations import HIGH_ERROR_RATE, SILENT_RUNS
    from deployments.catalog import by_address
    from tasks.events import ALIVE
    from tasks.runs import LANDING

    deployment_id = by_address(LANDING, Settings()).apply()
    for _ in range(2):  # installing again replaces it
        result = CliRunner().invoke(app, ["automations", "install"])
        assert result.exit_code == 0, result.output
    with get_client(sync_client=True) as client:
        [automation] = client.read_automations_by_name(HIGH_ERROR_RATE)
    assert automation.trigger.expect == {"bulkflow.import.high-error-rate"}  # type: ignore[union-attr]
    assert automation.actions[0].deployment_id == deployment_id  # type: ignore[union-attr]
    with get_client(sync_client=True) as client:
        [silent] = client.read_automations_by_name(SILENT_RUNS)
    assert silent.trigger.posture == "Proactive" and ALIVE in silent.trigger.after  # type: ignore[union-attr]
    assert silent.actions[0].state == "CRASHED"  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_live_run_waiting_on_a_slot_stays_running_and_a_killed_one_is_crashed(
    tmp_path: Path, prefect_api: str
) -> None:
    """The silent-runs automation on a real Prefect server. Two imports wait on the users
    write slot (held here) for over two minutes, their processes set to send Prefect's own
    heartbeats rarely (PREFECT_FLOWS_HEARTBEAT_FREQUENCY=100, more than the automation's
    three periods): the live one stays Running, then completes; the one killed with
    SIGKILL is marked Crashed."""
    import os
    import signal
    import subprocess
    import sys

    from bulkflow.settings import Settings
    from deployments.automations import SILENT_RUNS, install
    from deployments.catalog import by_address
    from tasks.events import ALIVE_EVERY_S
    from tasks.limits import table_slot
    from tasks.runs import LANDING

    by_address(LANDING, Settings()).apply()
    assert SILENT_RUNS in install()
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "100"}
    started: dict[str, tuple[subprocess.Popen[str], str]] = {}
    with table_slot(Settings(), "users"):
        for name in ("live", "killed"):
            path = tmp_path / f"{name}.csv"
            path.write_bytes((DATA / "users.csv").read_bytes().replace(b"example.com", f"{name}.example.com".encode()))
            process = subprocess.Popen(
                [sys.executable, "-m", "cli", "import", "users", str(path), "--json"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            started[name] = (process, _waiting_run(f"import-users-{name}.csv"))
        killed, killed_run = started["killed"]
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        deadline = time.monotonic() + 3 * ALIVE_EVERY_S + 60
        while _run(killed_run).state.type != StateType.CRASHED:
            assert time.monotonic() < deadline, "the killed run was never marked Crashed"
            time.sleep(2)
        waited = time.monotonic()
        while time.monotonic() < waited + 15:  # the live run has waited over two minutes by now
            time.sleep(1)
        live, live_run = started["live"]
        assert _run(live_run).state.type == StateType.RUNNING
    stdout, stderr = live.communicate(timeout=120)
    assert live.returncode == 0, stderr
    assert json.loads(stdout)["flow_run_id"] == live_run
    with get_client(sync_client=True) as client:
        history = [state.type for state in client.read_flow_run_states(UUID(live_run))]
    assert StateType.CRASHED not in history and history[-1] == StateType.COMPLETED


def _waiting_run(name: str, timeout: float = 120) -> str:
    """The id of the flow run called `name` once it is Running (waiting on the slot)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
        running = [run for run in runs if run.state and run.state.type == StateType.RUNNING]
        if running:
            return str(running[0].id)
        assert time.monotonic() < deadline, f"no running run {name}"
        time.sleep(0.5)


def test_a_resumed_run_names_the_runs_it_continues(tmp_path: Path) -> None:
    """A run fails after two chunks (a terminal error injected in the database); the run that
    resumes the job says which earlier run it continues."""
    from tests.helpers import sql

    sql(
        "CREATE OR REPLACE FUNCTION fail_third() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.chunk_index = 2 THEN RAISE EXCEPTION 'injected failure' USING ERRCODE = 'P0001'; END IF; RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER fail_third AFTER UPDATE ON import_chunks FOR EACH ROW EXECUTE FUNCTION fail_third()")
    options = ImportOptions(chunk_size=4, idempotency_key="resume-test")
    try:
        state = import_flow(resource="users", source=str(DATA / "users.csv"), options=options, return_state=True)
    finally:
        sql("DROP TRIGGER IF EXISTS fail_third ON import_chunks")
    assert state.is_failed()
    first_run = str(state.state_details.flow_run_id)
    report = import_flow(resource="users", source=str(DATA / "users.csv"), options=options)
    assert report.continues_runs == [first_run] and report.chunks_skipped >= 1


def test_serve_refuses_to_take_over_deployments_of_a_work_pool() -> None:
    """After `prefect deploy`, `bulkflow serve` must not re-register the same names without
    their pull steps (every worker run would then crash): it refuses, saying what to do. (The
    nightly deployment: the served runner of other tests never runs it.)"""
    from prefect.client.schemas.actions import WorkPoolCreate
    from typer.testing import CliRunner

    from bulkflow.settings import Settings
    from cli.app import app
    from deployments.catalog import by_address
    from tasks.runs import NIGHTLY

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="bulkflow-test-pool", type="process"))
        except Exception:  # noqa: BLE001 - already there from an earlier test run
            pass
        deployment_id = cast(UUID, by_address(NIGHTLY, Settings()).apply(work_pool_name="bulkflow-test-pool"))
        try:
            result = CliRunner().invoke(app, ["serve"])
        finally:
            client.delete_deployment(deployment_id)
    assert result.exit_code == 2
    assert (
        "nightly-export/nightly-parquet belong to a work pool" in result.stderr
        and "prefect worker start" in result.stderr
    )


@pytest.mark.usefixtures("served")
def test_deploy_refuses_deployments_that_serve_owns() -> None:
    """The other way round: `bulkflow deploy` does not move served deployments to a pool."""
    from typer.testing import CliRunner

    from cli.app import app

    result = CliRunner().invoke(app, ["deploy"])
    assert result.exit_code == 2, result.output
    assert "import/import" in result.stderr and "served by `bulkflow serve`" in result.stderr


@pytest.fixture()
def fresh_prefect_server(tmp_path: Path) -> Iterator[str]:
    """A Prefect server that has never seen bulkflow (`prefect server start`, own database)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "prefect server did not start"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_automations_install_on_a_fresh_server_says_what_to_do_first(fresh_prefect_server: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_API_URL": fresh_prefect_server}
    command = [sys.executable, "-m", "cli", "automations", "install"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 2, first.stderr
    line = first.stderr.strip().splitlines()[-1]
    assert line.startswith("error: installed mark-silent-runs-crashed, but pause-landing-on-high-error-rate")
    assert "start `bulkflow serve` (or run `bulkflow deploy`), then run `bulkflow automations install` again" in line
    assert "Traceback" not in first.stderr and "unexpected" not in first.stderr
    names = {a["name"] for a in httpx.post(f"{fresh_prefect_server}/automations/filter", json={}).json()}
    assert names == {"mark-silent-runs-crashed"}
    register = (
        "from bulkflow.settings import Settings; from deployments.catalog import by_address; "
        "from tasks.runs import LANDING; by_address(LANDING, Settings()).apply()"
    )
    subprocess.run([sys.executable, "-c", register], env=env, check=True, timeout=120)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    names = {a["name"] for a in httpx.post(f"{fresh_prefect_server}/automations/filter", json={}).json()}
    assert names == {"mark-silent-runs-crashed", "pause-landing-on-high-error-rate"}


def test_deploy_registers_the_catalog_on_the_work_pool_of_a_fresh_server(fresh_prefect_server: str) -> None:
    """`bulkflow deploy` through `prefect deploy` on a server that has never seen bulkflow: the
    pool is created and holds the four deployments, each run from the repository."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_API_URL": fresh_prefect_server, "BULKFLOW_NIGHTLY_CRON": "30 3 * * 1-5"}
    deployed = subprocess.run(
        [sys.executable, "-m", "cli", "deploy"], env=env, capture_output=True, text=True, timeout=300
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    found = httpx.post(f"{fresh_prefect_server}/deployments/filter", json={}, timeout=10).raise_for_status().json()
    assert {d["name"] for d in found} == {"import", "export", "nightly-parquet", "landing"}
    for deployment in found:
        assert deployment["work_pool_name"] == "bulkflow" and "bulkflow" in deployment["tags"]
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}
        ]
    nightly = next(d for d in found if d["name"] == "nightly-parquet")
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["30 3 * * 1-5"]
    assert nightly["parameters"] == {"format": "parquet"}


def test_a_small_files_bookkeeping_in_the_flow_is_retried_as_its_task_would_be() -> None:
    from prefect import flow, task

    from bulkflow.errors import InputError, RetryableError
    from tasks.retrying import bookkeeping_task_options, in_flow

    calls: list[str] = []

    @task(**bookkeeping_task_options("flaky", "flaky", retry_delay_s=0))
    def flaky(failures: int, error: type[Exception]) -> str:
        calls.append("call")
        if len(calls) <= failures:
            raise error("the database went away")
        return "done"

    @flow
    def run(failures: int, retryable: bool) -> str:
        return in_flow(flaky)(failures, RetryableError if retryable else InputError)

    assert run(failures=2, retryable=True) == "done" and len(calls) == 3  # tried again, as the task is
    calls.clear()
    with pytest.raises(InputError):
        run(failures=1, retryable=False)
    assert len(calls) == 1  # never again: a bad file stays bad
