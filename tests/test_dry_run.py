"""`--dry-run`: every check against the live tables, nothing written, and a prediction that
the real import of the same file then gives, row for row."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from prefect.client.orchestration import get_client
from typer.testing import CliRunner

from cli.app import app
from files.generate import GeneratorSpec, write_file
from schemas.reports import ImportReport
from tests.helpers import DATA, import_file, rejects_of, snapshot, sql
from tests.hostile import CASES, Case

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
PREDICTED = ("rows_read", "inserted", "updated", "unchanged", "rejected", "rejects_by_rule")
LOADED = [case for case in CASES if not case.refused]


def _writes(table_name: str) -> tuple[int, int, int]:
    """Rows inserted, updated and deleted in the table since statistics began, once the
    server's statistics have settled (sessions report theirs as they end, a moment later)."""
    query = f"SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = '{table_name}'"
    last, deadline = None, time.monotonic() + 30
    while time.monotonic() < deadline:
        sql("SELECT pg_stat_clear_snapshot()")
        found = sql(query)[0]
        if found == last:
            return found
        last = found
        time.sleep(1.5)
    raise AssertionError(f"the statistics of {table_name} did not settle")


def predicted_then_real(resource: str, path: Path, **options: Any) -> tuple[ImportReport, ImportReport]:
    """A dry run of the file, checked to leave the tables and the real job untouched, then
    the real import: both reports, once their counts and rejects are shown equal."""
    before = snapshot()
    chunks_before = sql("SELECT job_key, chunk_index FROM import_chunks WHERE job_key NOT LIKE '%:dry-run:%'")
    dry = import_file(resource, path, dry_run=True, **options)
    assert dry.dry_run and dry.status == "completed" and dry.invariant_holds
    after = snapshot()
    for name, frame in before.items():
        assert after[name].equals(frame), name  # nothing written
    assert sql("SELECT job_key, chunk_index FROM import_chunks WHERE job_key NOT LIKE '%:dry-run:%'") == chunks_before
    real = import_file(resource, path, **options)
    assert not real.dry_run and real.already_committed == 0  # the real import started from the beginning
    assert dry.model_dump(include=set(PREDICTED)) == real.model_dump(include=set(PREDICTED))
    assert rejects_of(dry.job_key) == rejects_of(real.job_key)
    return dry, real


def test_a_dry_run_predicts_generated_files_exactly(tmp_path: Path) -> None:
    chunked: dict[str, Any] = {"chunk_size": 97}
    users = tmp_path / "users.csv"
    write_file(GeneratorSpec("users", rows=800, invalid_share=0.1, seed=1), users)
    dry, _ = predicted_then_real("users", users, **chunked)
    assert dry.inserted > 0 and dry.rejected > 0
    # the same content again under a new key: every accepted row is predicted unchanged
    dry, _ = predicted_then_real("users", users, idempotency_key="users-again", **chunked)
    assert dry.unchanged > 0 and dry.inserted == dry.updated == 0
    # other content for the same ids, and more: updates and inserts, keys moved and taken
    write_file(GeneratorSpec("users", rows=1200, invalid_share=0.1, seed=2), tmp_path / "more-users.csv")
    more = pl.read_csv(tmp_path / "more-users.csv", infer_schema=False)
    renamed = pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.col("name") + " II").otherwise(pl.col("name"))
    changed = tmp_path / "users-2.csv"
    more.with_columns(renamed.alias("name")).write_csv(changed)
    dry, _ = predicted_then_real("users", changed, **chunked)
    assert dry.updated > 0 and dry.inserted > 0
    # articles by authors half of whom do not exist, then comments on them
    articles = tmp_path / "articles.ndjson"
    write_file(GeneratorSpec("articles", rows=800, invalid_share=0.1, seed=3, users=2400), articles)
    dry, _ = predicted_then_real("articles", articles, **chunked)
    assert dry.rejects_by_rule["unknown_author"] > 100
    comments = tmp_path / "comments.ndjson"
    write_file(GeneratorSpec("comments", rows=800, invalid_share=0.1, seed=4, users=2400, articles=1600), comments)
    dry, _ = predicted_then_real("comments", comments, **chunked)
    assert dry.rejects_by_rule["unknown_article"] > 100


@pytest.mark.slow
@pytest.mark.parametrize("case", LOADED, ids=[case.name for case in LOADED])
def test_a_dry_run_predicts_a_hostile_file_exactly(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in case.settings.items():
        monkeypatch.setenv(variable, value)
    chunked: dict[str, Any] = {"chunk_size": case.chunk_size} if case.chunk_size else {}
    dry, _ = predicted_then_real(case.resource, case.write(tmp_path), **chunked)
    assert dry.rows_read == case.rows_read


def test_a_dry_run_writes_no_tuple_and_is_marked_as_one(tmp_path: Path) -> None:
    import_file("users", DATA / "users.csv")
    changed = tmp_path / "users.csv"
    changed.write_text("id,email,name,role\nusr_bob,bob@example.com,Robert,admin\nusr_new,new@example.com,New,reader\n")
    writes = _writes("users")
    dry = import_file("users", changed, dry_run=True)
    assert (dry.inserted, dry.updated, dry.unchanged, dry.rejected) == (1, 1, 0, 0)
    assert _writes("users") == writes
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(dry.flow_run_id)  # type: ignore[arg-type]  # the flow ran, so it has an id
    assert "dry-run" in run.tags
    assert json.loads(json.dumps(run.parameters))["options"]["dry_run"] is True


def test_rejects_take_a_dry_runs_flow_run_id(tmp_path: Path) -> None:
    dry = import_file("users", DATA / "users.csv", dry_run=True)
    assert dry.rejects_handle == dry.flow_run_id
    output = tmp_path / "rejects.ndjson"
    result = CliRunner().invoke(app, ["rejects", str(dry.flow_run_id), "-o", str(output)])
    assert result.exit_code == 0, result.output
    entries = pl.read_ndjson(output)
    assert entries.height == sum(dry.rejects_by_rule.values()) == len(rejects_of(dry.job_key))
    assert sql("SELECT count(*) FROM users")[0][0] == 0


def test_the_command_line_says_it_was_a_dry_run() -> None:
    result = CliRunner().invoke(app, ["import", "users", str(DATA / "users.csv"), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dry_run"] is True and report["inserted"] == 6 and report["rejected"] == 8
    assert sql("SELECT count(*) FROM users")[0][0] == 0
    shown = CliRunner().invoke(app, ["import", "users", str(DATA / "users.csv"), "--dry-run"])
    assert "dry run (nothing written): import users from users.csv" in shown.stdout
