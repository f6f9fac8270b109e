"""The hostile corpus (`tests/hostile.py`) through the real command: every file gives
rejects with rule ids or one clear `error:` line with exit 2 and nothing written; never a
traceback, never exit 1; loaded + rejected = rows read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bulkflow.settings import Settings
from cli.app import app
from schemas.columns import READ_RULE
from tests.helpers import reset_imports, sql, table
from tests.hostile import CASES, Case, MiB, _bomb, row, user, users_csv

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
runner = CliRunner()
BY_NAME = {case.name: case for case in CASES}


@pytest.fixture(autouse=True, scope="module")
def _prefect_logs_outside_the_runner() -> None:
    """Bind Prefect's console handler now, not to the stderr of the first CliRunner call
    (closed by the next one, which would print logging errors of the test's own making)."""
    from prefect.logging.configuration import setup_logging

    setup_logging(incremental=False)


def _import(case: Case, path: Path) -> tuple[int, str, str]:
    arguments = ["import", case.resource, str(path), "--json"]
    if case.chunk_size:
        arguments += ["--chunk-size", str(case.chunk_size)]
    result = runner.invoke(app, arguments)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_file(case: Case, tmp_path: Path, settings_env: Callable[..., None]) -> None:
    settings_env(**case.settings)
    path = case.write(tmp_path)
    before = {name: table(name).height for name in ("users", "articles", "comments")}
    code, stdout, stderr = _import(case, path)
    assert "Traceback" not in stdout + stderr
    if case.refused:
        assert code == 2, stdout + stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and case.refused in last, stderr
        assert len(last) < 600
        assert {name: table(name).height for name in before} == before  # nothing written
        assert sql("SELECT count(*) FROM import_chunks")[0][0] == 0
        return
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["rows_read"] == case.rows_read
    assert report["rejects_by_rule"] == case.rejects
    accounted = report["inserted"] + report["updated"] + report["unchanged"] + report["rejected"]
    assert accounted == report["rows_read"]
    assert report["rejected"] == sum(case.rejects.values())  # one rule per rejected row here
    assert table(case.resource).height - before[case.resource] == case.loaded


def test_numeric_ids_keep_their_digits(tmp_path: Path) -> None:
    case = BY_NAME["numeric_ids_beyond_2_53"]
    assert _import(case, case.write(tmp_path))[0] == 0
    assert table("users")["id"].to_list() == ["12345678901234567890123", "12345678901234567890124"]


def test_values_are_read_as_written(tmp_path: Path) -> None:
    def load(name: str) -> dict[str, dict]:
        reset_imports()
        assert _import(BY_NAME[name], BY_NAME[name].write(tmp_path))[0] == 0
        return {r["id"]: r for r in table("users").to_dicts()}

    scalars = load("numbers_and_booleans_for_text")
    assert scalars["7"]["name"] == "3.5" and scalars["7"]["active"] is True
    assert load("cr_only")["u2"]["name"] == "Two\nlines"  # a CR inside quotes is a line break too
    assert set(load("ids_with_spaces_and_case_variants")) == {"U1", "u1", " u1"}  # ids exactly as written


def test_reject_entries_quote_a_short_excerpt(tmp_path: Path, settings_env: Callable[..., None]) -> None:
    case = BY_NAME["overlong_keys"]
    assert _import(case, case.write(tmp_path))[0] == 0
    values = [v for (v,) in sql("SELECT value FROM import_rejects WHERE rule = 'value_too_long'")]
    assert values and all(len(v) <= 1001 and v.endswith("…") for v in values)
    case = BY_NAME["nul_in_csv"]
    assert _import(case, case.write(tmp_path))[0] == 0
    [(value, raw)] = sql("SELECT value, raw FROM import_rejects WHERE rule = 'invalid_text'")
    assert value == "a\\u0000b" and "a\\u0000b" in raw


def test_first_accepted_occurrence_wins_after_a_database_rejection(tmp_path: Path) -> None:
    """The articles case: the first row with a slug names an unknown author; its later twin
    is valid and must load, as must a twin that follows a row whose slug another article
    already holds in the table."""
    sql("INSERT INTO users (id, email, role) VALUES ('u1', 'u1@x.io', 'author')")
    sql("INSERT INTO articles (id, slug, title, author_id, status) VALUES ('old', 'taken', 'T', 'u1', 'draft')")
    lines = [
        {"id": "a1", "slug": "hello", "title": "T", "author_id": "nobody", "status": "draft"},
        {"id": "a2", "slug": "hello", "title": "T", "author_id": "u1", "status": "draft"},
        {"id": "a3", "slug": "taken", "title": "T", "author_id": "u1", "status": "draft"},
        {"id": "a3", "slug": "fresh", "title": "T", "author_id": "u1", "status": "draft"},
    ]
    path = tmp_path / "articles.ndjson"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    for chunk_size in ("1", "100"):  # the decision does not depend on how the file is cut
        sql("DELETE FROM articles WHERE id <> 'old'")
        reset_imports(rows=False)
        result = runner.invoke(app, ["import", "articles", str(path), "--json", "--chunk-size", chunk_size])
        report = json.loads(result.stdout)
        assert report["rejects_by_rule"] == {"unknown_author": 1, "slug_taken": 1}, chunk_size
        assert sorted(table("articles")["slug"].to_list()) == ["fresh", "hello", "taken"]
        assert table("articles").filter(table("articles")["slug"] == "hello")["id"].item() == "a2"


def test_natural_keys_fold_as_the_unique_index_does(tmp_path: Path) -> None:
    """Emails the database's lower() folds together (dotted capital I under a UTF-8 locale)
    but polars does not: the unique index decides, with or without ids."""
    [(folds_together,)] = sql("SELECT lower('İa@x.io') = lower('ia@x.io')")
    path = tmp_path / "case.csv"
    path.write_bytes(users_csv(row(1, id="", email="ia@x.io"), row(2, id="", email="İa@x.io"), row(3, email="İa@x.io")))
    result = runner.invoke(app, ["import", "users", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    expected = {"duplicate_email": 2} if folds_together else {}
    assert report["rejects_by_rule"] == expected
    assert table("users").height == (1 if folds_together else 3)


def test_an_oversized_record_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    """A 48 MB line under a 1 MiB record limit: the reader never holds it."""
    from files.read import read_chunks
    from files.staging import stage_source
    from schemas import RESOURCES

    path = tmp_path / "huge.ndjson"
    with open(path, "wb") as out:
        out.write(json.dumps(user(1)).encode() + b'\n{"id": "u2", "name": "')
        for _ in range(48):
            out.write(b"x" * MiB)
        out.write(b'"}\n' + json.dumps(user(3)).encode() + b"\n")
    staged = stage_source(str(path), settings=Settings())
    tracemalloc.start()
    rows = [batch.rows for batch in read_chunks(staged, RESOURCES["users"], 1000, max_record=MiB)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [rule for r in rows if READ_RULE in r.columns for rule in r[READ_RULE].drop_nulls()] == ["record_too_large"]
    assert sum(r.height for r in rows) == 3
    assert peak < 8 * MiB, peak


def test_a_gzip_bomb_stops_at_the_limit_in_bounded_memory(tmp_path: Path, settings_env: Callable[..., None]) -> None:
    from bulkflow.errors import TooLargeError
    from files.staging import stage_source

    settings_env(BULKFLOW_MAX_SOURCE_BYTES=str(16 * MiB))
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(_bomb(16 * MiB))  # expands to 192 MiB
    assert path.stat().st_size < MiB
    before = _staged_copies()
    tracemalloc.start()
    with pytest.raises(TooLargeError, match="16777216 byte limit"):
        stage_source(str(path), settings=Settings())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * MiB, peak
    assert _staged_copies() == before  # the partial copy is gone


def test_a_failed_import_leaves_no_staged_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.import_flow

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("simulated failure after staging")

    monkeypatch.setattr(flows.import_flow, "decide", broken)
    path = tmp_path / "users.json"  # a JSON array is staged as an NDJSON copy
    path.write_text(json.dumps([user(1)]))
    before = _staged_copies()
    result = runner.invoke(app, ["import", "users", str(path)])
    assert result.exit_code == 2 and "simulated failure" in result.stderr
    assert _staged_copies() == before


def _staged_copies() -> set[Path]:
    """The staged copies in the home's staging folder (other tests on this worker may have
    left theirs: what a test checks is that it adds none)."""
    staging = Path(os.environ["BULKFLOW_HOME"]) / "staging"
    return set(staging.iterdir()) if staging.exists() else set()


def _bulkflow(api_url: str, *arguments: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """The real command in its own process (its console output is what a user sees)."""
    code = "\n".join(
        ["import sys", prelude, "from cli.app import app", "sys.argv = ['bulkflow', *sys.argv[1:]]", "app()"]
    )
    env = {**os.environ, "PREFECT_API_URL": api_url}
    return subprocess.run(
        [sys.executable, "-c", code, *arguments], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_console_shows_no_traceback_for_a_refused_file_or_a_bug(tmp_path: Path, prefect_api: str) -> None:
    unclosed = BY_NAME["unclosed_quote"].write(tmp_path)
    done = _bulkflow(prefect_api, "import", "users", str(unclosed))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error:")
    # An unexpected error inside the run (a bug, simulated) is one line and exit 2, not 1.
    bug = "import decisions.decide as v; v.decide = lambda *a, **k: {}['boom']"
    done = _bulkflow(prefect_api, "import", "users", str(BY_NAME["sql_looking_values"].write(tmp_path)), prelude=bug)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unexpected KeyError") and "please report" in last
