"""Exactly once: failures at any point, then a retry or re-run, end like one clean run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from files.generate import GeneratorSpec, write_file
from flows.import_flow import import_flow
from schemas.parameters import ImportOptions
from tests.helpers import ImportState, import_state, reset_imports, sql

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
ROWS, CHUNK = 3000, 250


@pytest.fixture()
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.csv"
    write_file(GeneratorSpec("users", rows=ROWS, invalid_share=0.1, seed=5), path)
    return path


@pytest.fixture()
def clean_state(users_file: Path) -> Iterator[ImportState]:
    """Tables, rejects and totals of one clean run; the database is emptied afterwards."""
    report = import_flow(resource="users", source=str(users_file), options=ImportOptions(chunk_size=CHUNK))
    state = import_state(report)
    _reset()
    yield state


def _reset() -> None:
    reset_imports()


def _fail_chunk(index: int, errcode: str, times: int = 1_000_000) -> None:
    """Make committing chunk `index` fail `times` times (a sequence survives rollbacks)."""
    sql("DROP SEQUENCE IF EXISTS fail_count")
    sql("CREATE SEQUENCE fail_count")
    sql(
        "CREATE OR REPLACE FUNCTION fail_chunk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.chunk_index = {index} AND nextval('fail_count') <= {times} THEN "
        f"RAISE EXCEPTION 'injected failure' USING ERRCODE = '{errcode}'; END IF; RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER fail_chunk AFTER UPDATE ON import_chunks FOR EACH ROW EXECUTE FUNCTION fail_chunk()")


@pytest.fixture(autouse=True)
def _no_injection() -> Iterator[None]:
    yield
    sql("DROP TRIGGER IF EXISTS fail_chunk ON import_chunks")
    sql("DROP TRIGGER IF EXISTS slow_chunk ON import_chunks")


def test_failure_after_k_chunks_then_rerun_equals_clean_run(users_file: Path, clean_state: ImportState) -> None:
    _fail_chunk(4, "P0001")  # a terminal error: no task retry
    with pytest.raises(Exception, match="injected failure"):
        import_flow(resource="users", source=str(users_file), options=ImportOptions(chunk_size=CHUNK))
    committed = sql("SELECT count(*) FROM import_chunks")[0][0]
    assert 4 <= committed < ROWS // CHUNK
    assert sql("SELECT count(*) FROM import_chunks WHERE chunk_index = 4")[0][0] == 0  # nothing half-applied
    sql("DROP TRIGGER fail_chunk ON import_chunks")
    report = import_flow(resource="users", source=str(users_file), options=ImportOptions(chunk_size=CHUNK))
    assert report.chunks_skipped == committed
    import_state(report).assert_same(clean_state)


def test_transient_database_error_is_retried_by_the_task(users_file: Path, clean_state: ImportState) -> None:
    _fail_chunk(2, "40001", times=1)  # serialization_failure: retryable
    report = import_flow(resource="users", source=str(users_file), options=ImportOptions(chunk_size=CHUNK))
    assert sql("SELECT last_value FROM fail_count")[0][0] >= 2  # failed once, then retried
    import_state(report).assert_same(clean_state)


def test_prefect_flow_retry_resumes_the_job(users_file: Path, clean_state: ImportState) -> None:
    _fail_chunk(3, "P0001", times=1)
    retrying = import_flow.with_options(retries=1, retry_delay_seconds=0)
    report = retrying(resource="users", source=str(users_file), options=ImportOptions(chunk_size=CHUNK))
    # A flow retry is the same run: the chunks its first attempt committed are its own work.
    assert sql("SELECT count(DISTINCT flow_run_id) FROM import_chunks") == [(1,)]
    assert report.chunks_skipped == report.already_committed == 0
    assert {k: getattr(report, k) for k in ("inserted", "updated", "rejected")} == {
        k: getattr(report.job, k) for k in ("inserted", "updated", "rejected")
    }
    import_state(report).assert_same(clean_state)


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_equals_clean_run(
    users_file: Path, clean_state: ImportState, prefect_api: str
) -> None:
    # Slow each chunk commit a little so the kill lands mid-run.
    sql(
        "CREATE OR REPLACE FUNCTION slow_chunk() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.15); RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER slow_chunk AFTER UPDATE ON import_chunks FOR EACH ROW EXECUTE FUNCTION slow_chunk()")
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    command = [sys.executable, "-m", "cli", "import", "users", str(users_file), "--chunk-size", str(CHUNK), "--json"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while sql("SELECT count(*) FROM import_chunks WHERE rejected + inserted > 0")[0][0] < 3:
        assert process.poll() is None and time.monotonic() < deadline, "the import ended before it could be killed"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed = sql("SELECT count(*) FROM import_chunks")[0][0]
    assert 3 <= committed < ROWS // CHUNK
    sql("DROP TRIGGER slow_chunk ON import_chunks")
    report = import_flow(resource="users", source=str(users_file), options=ImportOptions(chunk_size=CHUNK))
    assert report.chunks_skipped == committed
    import_state(report).assert_same(clean_state)


def test_resume_uses_the_jobs_original_chunk_size(users_file: Path, clean_state: ImportState) -> None:
    _fail_chunk(5, "P0001")
    with pytest.raises(Exception, match="injected failure"):
        import_flow(resource="users", source=str(users_file), options=ImportOptions(chunk_size=CHUNK))
    sql("DROP TRIGGER fail_chunk ON import_chunks")
    report = import_flow(resource="users", source=str(users_file), options=ImportOptions(chunk_size=999))
    import_state(report).assert_same(clean_state)
    assert pl.Series([r[0] for r in sql("SELECT rows_read FROM import_chunks")]).max() == CHUNK


def test_an_id_inserted_meanwhile_by_another_transaction_turns_the_chunk_into_an_upsert(
    users_file: Path, clean_state: ImportState
) -> None:
    """The fast path (plain INSERT of ids the table lacked) meets an id that appeared after
    its check: the chunk falls back to the upsert and ends like a clean run."""
    first_chunk = pl.read_csv(users_file, infer_schema=False, n_rows=CHUNK)
    loaded = set(clean_state.tables["users"]["id"].to_list())
    ids = [i for i in first_chunk["id"].to_list() if i in loaded]
    # A trigger plays the other transaction: when chunk 0 inserts its first row, a row with
    # chunk 0's last id appears, before the INSERT reaches that id.
    sql("DROP SEQUENCE IF EXISTS sneak_count")
    sql("CREATE SEQUENCE sneak_count")
    sql(
        "CREATE OR REPLACE FUNCTION sneak() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.id = '{ids[0]}' AND nextval('sneak_count') = 1 THEN "
        f"INSERT INTO users (id, email) VALUES ('{ids[-1]}', 'sneaky@example.com'); END IF; RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER sneak BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION sneak()")
    try:
        report = import_flow(resource="users", source=str(users_file), options=ImportOptions(chunk_size=CHUNK))
    finally:
        sql("DROP TRIGGER IF EXISTS sneak ON users")
    assert sql("SELECT last_value FROM sneak_count")[0][0] == 2  # fired for the INSERT, then for the upsert
    import_state(report).assert_same(clean_state)
