"""The landing pick-up: each landed file imported once, in dependency order, as its own import
run that the served deployments' runner takes; the watcher starts pick-ups only when files wait."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import pytest

from bulkflow.settings import Settings
from flows.import_flow import import_flow
from flows.landing_flow import landing_pickup
from tasks.landing import list_landed
from tests.helpers import DATA, sql

pytestmark = pytest.mark.usefixtures("prefect_api", "db", "served")


def land(root: Path, resource: str, name: str, source: Path) -> Path:
    (root / resource).mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, root / resource / name))


def test_files_are_listed_in_dependency_order_and_unfinished_ones_wait(tmp_path: Path) -> None:
    land(tmp_path, "comments", "a.ndjson", DATA / "comments.ndjson")
    land(tmp_path, "articles", "b.ndjson", DATA / "articles.ndjson")
    land(tmp_path, "users", "c.csv", DATA / "users.csv")
    for unfinished in (".c.csv", "_c.csv", "c.csv.part", "c.csv.tmp"):
        land(tmp_path, "users", unfinished, DATA / "users.csv")
    (tmp_path / "uploads").mkdir()
    land(tmp_path, "uploads", "x.csv", DATA / "users.csv")
    assert [(f.resource, Path(f.location).name) for f in list_landed(Settings(), str(tmp_path))] == [
        ("users", "c.csv"),
        ("articles", "b.ndjson"),
        ("comments", "a.ndjson"),
    ]


def test_pickup_imports_each_file_once(tmp_path: Path) -> None:
    # Comments land first and sort first by name, yet users and articles are imported before them.
    land(tmp_path, "comments", "0-comments.ndjson", DATA / "comments.ndjson")
    land(tmp_path, "articles", "1-articles.ndjson", DATA / "articles.ndjson")
    users = land(tmp_path, "users", "2-users.csv", DATA / "users.csv")
    outcomes = landing_pickup(landing=str(tmp_path))
    assert [Path(p).name for p in outcomes["imported"]] == ["2-users.csv", "1-articles.ndjson", "0-comments.ndjson"]
    counts = sql(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM articles), (SELECT count(*) FROM comments)"
    )
    assert counts == [(6, 4, 3)]  # the sample files' exact counts: foreign keys resolved
    summary = _latest_summary()
    assert [(row["file"], row["outcome"], row["rows"], row["rejected"]) for row in summary] == [
        ("2-users.csv", "imported", 14, 8),
        ("1-articles.ndjson", "imported", 12, 8),
        ("0-comments.ndjson", "imported", 10, 7),
    ]
    assert all(row["import run"] for row in summary)
    pickup = _latest_pickup_id()
    runs = _import_runs_of(pickup)
    assert "find-new-files" in _task_run_names(pickup)
    assert [run.name for run in runs] == [
        "import-users-2-users.csv",
        "import-articles-1-articles.ndjson",
        "import-comments-0-comments.ndjson",
    ]
    assert all({"bulkflow", "via:landing", f"resource:{run.parameters['resource']}"} <= set(run.tags) for run in runs)
    for earlier, later in zip(runs, runs[1:], strict=False):  # one resource after the other
        assert earlier.end_time is not None and later.start_time is not None and earlier.end_time <= later.start_time

    # Nothing new: nothing is read or imported again.
    jobs_before = sql("SELECT count(*) FROM import_runs")[0][0]
    assert landing_pickup(landing=str(tmp_path)) == {"imported": [], "duplicate": [], "failed": [], "retry_later": []}
    # The same content under another name, even imported earlier under an idempotency key, is a duplicate.
    land(tmp_path, "users", "3-users-again.csv", users)
    outcomes = landing_pickup(landing=str(tmp_path))
    assert [Path(p).name for p in outcomes["duplicate"]] == ["3-users-again.csv"] and not outcomes["imported"]
    assert sql("SELECT count(*) FROM import_runs")[0][0] == jobs_before
    [duplicate] = _latest_summary()
    assert duplicate["outcome"] == "duplicate"
    assert duplicate["why"].startswith("the same content as 2-users.csv (job import:users:")  # which file it repeats


def test_small_files_are_imported_by_the_pickup_and_large_ones_by_the_deployment(
    tmp_path: Path,
    settings_env,  # noqa: ANN001
) -> None:
    """Each file its own import run either way: a small one a subflow run of the pick-up's own
    process, a larger one a run of the import deployment that the served runner takes. The
    large one's checksum and record are task runs of the pick-up; the small one's are calls
    in the pick-up's flow (task runs cost a small file more than their work)."""
    land(tmp_path, "users", "1-small.csv", DATA / "users.csv")
    large = land(tmp_path, "users", "2-large.csv", DATA / "users.csv")
    large.write_bytes(large.read_bytes() + b"usr_zoe,zoe@example.com,Zoe,reader,true,2024-01-05T09:00:00Z,\r\n")
    settings_env(BULKFLOW_LANDING_INLINE_BYTES=str((tmp_path / "users" / "1-small.csv").stat().st_size))
    outcomes = landing_pickup(landing=str(tmp_path))
    assert [Path(p).name for p in outcomes["imported"]] == ["1-small.csv", "2-large.csv"]
    runs = {run.name: run for run in _import_runs_of(_latest_pickup_id())}
    small, deployed = runs["import-users-1-small.csv"], runs["import-users-2-large.csv"]
    assert small.deployment_id is None and deployed.deployment_id is not None
    assert all(run.state is not None and run.state.is_completed() for run in (small, deployed))
    assert all({"bulkflow", "via:landing", "resource:users"} <= set(run.tags) for run in (small, deployed))
    assert [(row["file"], row["rows"], row["rejected"]) for row in _latest_summary()] == [
        ("1-small.csv", 14, 8),
        ("2-large.csv", 15, 8),
    ]
    assert small.end_time is not None and deployed.start_time is not None
    bookkeeping = {name for name in _task_run_names(_latest_pickup_id()) if name.startswith(("sha256-", "record-"))}
    assert bookkeeping == {"sha256-2-large.csv", "record-imported-2-large.csv"}


def test_a_bad_file_fails_once_and_does_not_stop_the_others(tmp_path: Path) -> None:
    land(tmp_path, "users", "a-unreadable.csv", DATA / "users.csv").write_bytes(b"id,email\n\xff\xfe,x\n")
    land(tmp_path, "users", "b-users.csv", DATA / "users.csv")
    state = landing_pickup(landing=str(tmp_path), return_state=True)
    assert state.is_failed() and "a-unreadable.csv" in (state.message or "")
    assert sql("SELECT count(*) FROM users")[0][0] == 6
    assert sql("SELECT outcome, detail LIKE '%not valid UTF-8%' FROM landing_files ORDER BY location") == [
        ("failed", True),
        ("imported", None),
    ]
    failed = {row["file"]: row["why"] for row in _latest_summary()}
    assert "not valid UTF-8 (line 2" in failed["a-unreadable.csv"] and failed["b-users.csv"] == ""
    # Recorded as failed: the next pick-up leaves it alone until the file changes.
    assert landing_pickup(landing=str(tmp_path))["failed"] == []


def test_content_imported_under_an_idempotency_key_is_not_imported_again(tmp_path: Path) -> None:
    from schemas.parameters import ImportOptions

    import_flow(resource="users", source=str(DATA / "users.csv"), options=ImportOptions(idempotency_key="k-1"))
    land(tmp_path, "users", "users.csv", DATA / "users.csv")
    assert [Path(p).name for p in landing_pickup(landing=str(tmp_path))["duplicate"]] == ["users.csv"]


def test_default_landing_root_is_under_bulkflow_home() -> None:
    from bulkflow.settings import Settings

    assert Settings().landing_root() == str(Path(os.environ["BULKFLOW_HOME"]).resolve() / "landing")


def test_a_refused_upload_leaves_nothing_in_landing_storage(tmp_path: Path, settings_env) -> None:  # noqa: ANN001
    import io

    from bulkflow.errors import InputError, TooLargeError
    from tasks.landing import store_upload

    settings_env(BULKFLOW_LANDING_URL=str(tmp_path), BULKFLOW_MAX_SOURCE_BYTES="100")
    with pytest.raises(TooLargeError):
        store_upload(Settings(), io.BytesIO((DATA / "users.csv").read_bytes()), "users.csv", None)
    with pytest.raises(InputError, match="empty"):
        store_upload(Settings(), io.BytesIO(b""), "users.csv", None)
    assert list((tmp_path / "uploads").iterdir()) == []
    stored = store_upload(Settings(), io.BytesIO(b"id,email\n1,a@example.com\n"), "u.csv", None)
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [Path(stored).name]


def test_the_watcher_starts_a_pickup_only_when_files_wait(tmp_path: Path, settings_env) -> None:  # noqa: ANN001
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from deployments.landing_watch import logger as watch_logger
    from deployments.landing_watch import start_pickup_if_files_wait
    from tasks.runs import LANDING

    settings_env(BULKFLOW_LANDING_URL=str(tmp_path))
    (tmp_path / "users").mkdir()
    land(tmp_path, "users", "u.csv.part", DATA / "users.csv")  # still being written
    assert start_pickup_if_files_wait(Settings()) is None
    (tmp_path / "users" / "u.csv.part").rename(tmp_path / "users" / "u.csv")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(LANDING)
        later = client.create_flow_run_from_deployment(
            deployment.id, state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(hours=1))
        )
        assert start_pickup_if_files_wait(Settings()) is None  # a pick-up is already scheduled
        client.delete_flow_run(later.id)
        client.pause_deployment(deployment.id)
        try:
            heard = _Heard()
            watch_logger.addHandler(heard)
            try:
                for _ in range(2):  # paused (by an operator or the error-rate automation): said at every look
                    assert start_pickup_if_files_wait(Settings()) is None
            finally:
                watch_logger.removeHandler(heard)
        finally:
            client.resume_deployment(deployment.id)
        said = [r.getMessage() for r in heard.records if r.levelno == logging.WARNING]
        assert len(said) == 2 and all("is paused" in line and "1 landed file(s) wait" in line for line in said)
        assert "prefect deployment resume landing-pickup/landing" in said[0]
        started = start_pickup_if_files_wait(Settings())
        assert started is not None
        assert {"bulkflow", "via:landing"} <= set(client.read_flow_run(started).tags)


class _Heard(logging.Handler):
    """Keeps the records a logger emits."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _latest_pickup_id() -> UUID:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["landing-pickup"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    return run.id


def _import_runs_of(pickup_id: UUID) -> list:
    """The import runs a pick-up started (its child runs), in start order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[pickup_id]))
        )
    return sorted(runs, key=lambda run: run.start_time)


def _task_run_names(flow_run_id: UUID) -> set[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {task_run.name for task_run in task_runs}


def _latest_summary() -> list[dict]:
    """The rows of the newest landing pick-up summary table artifact."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["landing-pickup-summary"]))
        )
    newest = max(artifacts, key=lambda artifact: str(artifact.created))  # ISO-8601 text sorts as time
    data = newest.data
    assert data is not None
    return json.loads(data) if isinstance(data, str) else list(cast(list[dict[str, Any]], data))


def test_an_import_run_nobody_starts_is_cancelled_and_its_file_waits() -> None:
    """A pick-up does not wait forever when no runner or worker serves the import deployment."""
    from prefect.client.orchestration import get_client

    from tasks.landing import outcome_of
    from tasks.runs import wait_for_run

    deployment_id = cast(UUID, import_flow.to_deployment(name="served-by-nobody").apply())  # type: ignore[union-attr]  # typed for async callers too
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment_id, parameters={"resource": "users", "source": "x.csv"})
        try:
            ended = wait_for_run(run.id, start_within_s=2)
        finally:
            client.delete_deployment(deployment_id)
    assert ended.state is not None and ended.state.is_cancelled()
    outcome, detail = outcome_of(ended)
    assert outcome is None and detail is not None and "no runner or worker started this run within 2 s" in detail


def test_serve_says_where_the_landing_is_and_creates_its_folders(served: Callable[[], str]) -> None:
    root = Settings().landing_root()
    console = served()
    assert f"landing: {root} (looked at every 86400 s" in console
    for resource in ("users", "articles", "comments"):
        assert f"drop {resource} files in {root}/{resource}/" in console
        assert Path(root, resource).is_dir()


@pytest.mark.slow
def test_watch_says_where_the_landing_is_and_creates_its_folders(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, "BULKFLOW_LANDING_URL": str(tmp_path / "landing"), "BULKFLOW_LANDING_INTERVAL": "3600"}
    watcher = subprocess.Popen([sys.executable, "-m", "cli", "watch"], env=env, stderr=subprocess.PIPE, text=True)
    assert watcher.stderr is not None
    try:
        lines = [watcher.stderr.readline() for _ in range(4)]
    finally:
        watcher.terminate()
        watcher.wait(timeout=30)
    assert lines[0].startswith(f"landing: {tmp_path / 'landing'} (looked at every 3600 s")
    assert [line.split()[1] for line in lines[1:]] == ["users", "articles", "comments"]
    assert sorted(p.name for p in (tmp_path / "landing").iterdir()) == ["articles", "comments", "users"]


def test_runs_have_their_names_from_the_moment_they_are_created(tmp_path: Path, settings_env) -> None:  # noqa: ANN001
    """Not a random name until a runner starts them: what the runs list shows at once."""
    from datetime import UTC, datetime

    from prefect.client.orchestration import get_client

    from deployments.landing_watch import start_pickup_if_files_wait
    from tasks.landing import start_import
    from tasks.runs import wait_for_run

    land(tmp_path, "users", "partner-7.csv", DATA / "users.csv")
    [file] = list_landed(Settings(), str(tmp_path))
    child = start_import(file)
    assert child.name == "import-users-partner-7.csv"
    settings_env(BULKFLOW_LANDING_URL=str(tmp_path / "watched"))
    land(tmp_path / "watched", "users", "u.csv", DATA / "users.csv")
    before = datetime.now(UTC).strftime("landing-%Y-%m-%dT")
    deadline = time.monotonic() + 120
    while (pickup := start_pickup_if_files_wait(Settings())) is None:  # an earlier test's pick-up may still run
        assert time.monotonic() < deadline, "a landing pick-up never ended"
        time.sleep(1)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(pickup).name.startswith(before)
    for run_id in (child.id, pickup):  # both run on the served runner: let them end before the next test
        ended = wait_for_run(run_id, start_within_s=120).state
        assert ended is not None and ended.is_final()
