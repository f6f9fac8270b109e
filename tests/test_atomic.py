"""`--atomic`: the file's accepted rows become visible in one transaction at the end, or
not at all; a failure or a `kill -9` at any moment leaves the table as before or as after."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from files.generate import GeneratorSpec, write_file
from schemas.reports import ImportReport
from tests.helpers import ImportState, import_file, import_state, reset_imports, run_log, sql, table

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
ROWS, CHUNK = 3000, 250
ATOMIC: dict[str, Any] = {"chunk_size": CHUNK, "atomic": True}


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A first users file, and a partner file that adds as many users (its first lines)
    and updates every one of them."""
    first = tmp_path / "first.csv"
    write_file(GeneratorSpec("users", rows=ROWS // 2, invalid_share=0.0, seed=5), first)
    write_file(GeneratorSpec("users", rows=ROWS, invalid_share=0.1, seed=6), tmp_path / "generated.csv")
    generated = pl.read_csv(tmp_path / "generated.csv", infer_schema=False)
    partner = tmp_path / "partner.csv"
    generated.reverse().with_columns((pl.col("name") + " v2").alias("name")).write_csv(partner)
    return first, partner


def _start_from(first: Path) -> pl.DataFrame:
    reset_imports()
    import_file("users", first)
    return table("users")


@pytest.fixture()
def clean(files: tuple[Path, Path]) -> Iterator[tuple[pl.DataFrame, ImportState]]:
    """The users table before the partner file, and the state after one clean atomic run."""
    first, partner = files
    before = _start_from(first)
    state = import_state(import_file("users", partner, **ATOMIC))
    _start_from(first)
    yield before, state


def test_an_atomic_import_ends_as_a_plain_one(files: tuple[Path, Path]) -> None:
    first, partner = files
    _start_from(first)
    plain = import_file("users", partner, chunk_size=CHUNK)
    expected = import_state(plain)
    _start_from(first)
    atomic = import_file("users", partner, **ATOMIC)
    assert atomic.atomic and atomic.invariant_holds
    assert (atomic.inserted, atomic.updated, atomic.unchanged, atomic.rejected) == (
        plain.inserted,
        plain.updated,
        plain.unchanged,
        plain.rejected,
    )
    import_state(atomic).assert_same(expected)
    assert sql("SELECT count(*) FROM pg_tables WHERE tablename LIKE '_bulkflow_job_%'") == [(0,)]  # dropped


def _fail_chunk(index: int) -> None:
    sql(
        "CREATE OR REPLACE FUNCTION fail_chunk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.chunk_index = {index} THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER fail_chunk AFTER UPDATE ON import_chunks FOR EACH ROW EXECUTE FUNCTION fail_chunk()")


def test_a_failed_atomic_import_leaves_the_table_as_it_was_and_a_re_run_applies_once(
    files: tuple[Path, Path], clean: tuple[pl.DataFrame, ImportState]
) -> None:
    before, after = clean
    _fail_chunk(7)
    try:
        with pytest.raises(Exception, match="injected failure"):
            import_file("users", files[1], **ATOMIC)
    finally:
        sql("DROP TRIGGER IF EXISTS fail_chunk ON import_chunks")
    assert sql("SELECT count(*) FROM import_chunks WHERE chunk_index < 7 AND rejected > 0")[0][0] == 7  # staged
    assert table("users").equals(before)  # none of it is visible
    report = import_file("users", files[1], **ATOMIC)
    assert report.chunks_skipped >= 7 and report.continues_runs
    import_state(report).assert_same(after)


def _import_while_another_writer_takes_an_email(partner: Path) -> tuple[ImportReport, dict[str, Any]]:
    """An atomic import of `partner` during which another writer takes the email of a new
    user of chunk 0 once chunk 0 is staged: only the apply, in its own transaction, can find
    out. The report, and that user's row."""
    staged = pl.read_csv(partner, infer_schema=False, n_rows=CHUNK)
    known = set(table("users").get_column("id").to_list())
    email = staged.filter(~pl.col("id").is_in(list(known)) & pl.col("email").str.contains("@")).row(0, named=True)
    sql(
        "CREATE OR REPLACE FUNCTION sneak() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.chunk_index = 0 AND NOT EXISTS (SELECT 1 FROM users WHERE id = 'sneaky') THEN "
        f"INSERT INTO users (id, email) VALUES ('sneaky', '{email['email']}'); "
        "END IF; RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER sneak AFTER UPDATE ON import_chunks FOR EACH ROW EXECUTE FUNCTION sneak()")
    try:
        return import_file("users", partner, **ATOMIC), email
    finally:
        sql("DROP TRIGGER IF EXISTS sneak ON import_chunks")


def test_a_row_another_writer_takes_before_the_apply_becomes_a_reject(files: tuple[Path, Path]) -> None:
    first, partner = files
    _start_from(first)
    plain = import_file("users", partner, chunk_size=CHUNK)
    _start_from(first)
    report, email = _import_while_another_writer_takes_an_email(partner)
    assert (report.inserted, report.rejected) == (plain.inserted - 1, plain.rejected + 1)
    assert report.invariant_holds
    assert sql(f"SELECT chunk_index, rule FROM import_rejects WHERE value = '{email['email']}'") == [(0, "email_taken")]
    assert table("users").filter(pl.col("email") == email["email"]).get_column("id").to_list() == ["sneaky"]


def test_the_apply_writes_each_chunk_as_it_is_staged_and_none_is_visible_before_its_commit(
    files: tuple[Path, Path], clean: tuple[pl.DataFrame, ImportState]
) -> None:
    before, after = clean
    # What other sessions see of the table while the last chunk is staged: by then the
    # apply has written the chunks before it, in its own transaction.
    sql("CREATE TABLE seen_during (users bigint)")
    sql(
        "CREATE OR REPLACE FUNCTION look() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.chunk_index = {ROWS // CHUNK - 1} AND NEW.inserted + NEW.updated = 0 THEN "  # staged, not applied
        "INSERT INTO seen_during SELECT count(*) FROM users; END IF; "
        "RETURN NEW; END $$"
    )
    sql("CREATE TRIGGER look AFTER UPDATE ON import_chunks FOR EACH ROW EXECUTE FUNCTION look()")
    try:
        report = import_file("users", files[1], **ATOMIC)
        seen = sql("SELECT DISTINCT users FROM seen_during")
    finally:
        sql("DROP TRIGGER IF EXISTS look ON import_chunks")
        sql("DROP TABLE IF EXISTS seen_during")
    assert seen == [(before.height,)]
    import_state(report).assert_same(after)
    assert "applied in one transaction, each chunk written as it was staged" in run_log(report.flow_run_id)


def test_an_apply_that_meets_another_writer_applies_the_staged_rows_at_the_end(files: tuple[Path, Path]) -> None:
    _start_from(files[0])
    report, _ = _import_while_another_writer_takes_an_email(files[1])
    assert report.invariant_holds and report.rejects_by_rule.get("email_taken", 0) >= 1
    log = run_log(report.flow_run_id)
    assert any(line.startswith("applying the staged rows at the end: chunk 0: ") for line in log), log


@pytest.mark.slow
@pytest.mark.parametrize("option", [["--atomic"], ["--mode", "replace"]], ids=["atomic", "replace"])
def test_kill_9_at_random_moments_leaves_the_table_before_or_after(
    files: tuple[Path, Path], prefect_api: str, option: list[str]
) -> None:
    first, partner = files
    before = _start_from(first)
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    command = [sys.executable, "-m", "cli", "import", "users", str(partner), "--json", "--chunk-size", str(CHUNK)]
    command += option
    started = time.monotonic()
    subprocess.run(command, env=env, capture_output=True, check=True)  # a clean run: how long it takes, what it leaves
    duration = time.monotonic() - started
    after = table("users")
    assert not after.equals(before)
    _start_from(first)
    moments = random.Random(19).sample(range(10, 100), 10)  # percent of a run's duration
    outcomes = []
    for percent in moments:
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        time.sleep(duration * percent / 100)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        users = table("users")
        assert users.equals(before) or users.equals(after), f"killed at {percent}%: in between"
        outcomes.append("after" if users.equals(after) else "before")
        if outcomes[-1] == "after":
            _start_from(first)  # applied: start over, so the next kill can land mid-run again
    assert "before" in outcomes
    finished = subprocess.run(command, env=env, capture_output=True, check=True)  # the last killed run's job
    assert table("users").equals(after), finished.stderr[-2000:]
