"""The `bulkflow` command: exit codes, one-line errors, the JSON report, rejects export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from tests.helpers import DATA

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
runner = CliRunner()


def bulkflow(api_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the real command in its own process against the session's Prefect server."""
    env = {**os.environ, "PREFECT_API_URL": api_url}
    return subprocess.run(
        [sys.executable, "-m", "cli", *arguments], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_import_json_prints_exactly_one_json_object_on_stdout(prefect_api: str) -> None:
    """A real process: logs go to stderr, stdout holds the report alone."""
    done = bulkflow(prefect_api, "import", "users", str(DATA / "users.csv"), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    for key in (
        "flow_run_id",
        "status",
        "rows_read",
        "inserted",
        "updated",
        "rejected",
        "rejects_by_rule",
        "duration_s",
        "rows_per_s",
    ):
        assert key in report
    assert (report["status"], report["rows_read"], report["rejected"]) == ("completed", 14, 8)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["import", "users", "/nonexistent/users.csv"], "file not found"),
        (["import", "widgets", str(DATA / "users.csv")], "widgets"),
        (["import", "users", str(DATA / "users.csv"), "--format", "xml"], "unknown format"),
        (["import", "users", str(DATA / "README.md")], "cannot tell the format"),
    ],
)
def test_unusable_parameters_exit_2_before_any_flow_run(arguments: list[str], message: str) -> None:
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert_one_line_error(result.stderr, message)


def assert_one_line_error(stderr: str, message: str) -> None:
    """The error is the last line, alone; flow logs may precede it but no traceback."""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_unusable_file_content_exits_2(tmp_path: Path, prefect_api: str) -> None:
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("id,email,role\nu1,caf\u00e9@example.com,reader\n".encode("latin-1"))
    done = bulkflow(prefect_api, "import", "users", str(latin1))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "not valid UTF-8 (line 2")
    done = bulkflow(prefect_api, "import", "articles", str(DATA / "users.csv"))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "lacks required column(s) slug, title, author_id, status")


def test_rejects_command_writes_ndjson(tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", "comments", str(DATA / "comments.ndjson"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    out = tmp_path / "rejects.ndjson"
    rejects = runner.invoke(app, ["rejects", report["flow_run_id"], "--output", str(out)])
    assert rejects.exit_code == 0, rejects.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == sum(report["rejects_by_rule"].values())
    assert set(lines[0]) == {"line", "field", "rule", "message", "value", "raw"}
    # comments reference no article here (empty database), so every row is rejected
    assert {entry["line"] for entry in lines} == set(range(1, 11))


def test_rejects_of_unknown_run_exits_2() -> None:
    result = runner.invoke(app, ["rejects", "no-such-run"])
    assert result.exit_code == 2 and "no import found" in result.stderr


def test_db_migrate() -> None:
    result = runner.invoke(app, ["db", "migrate"])
    assert result.exit_code == 0 and "schema is up to date" in result.stderr


def test_generate_writes_the_requested_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.ndjson"
    result = runner.invoke(app, ["generate", "comments", str(path), "--rows", "25"])
    assert result.exit_code == 0
    assert len(path.read_text().splitlines()) == 25


@pytest.mark.slow
def test_the_progress_bar_on_a_real_terminal_keeps_log_lines_out_of_it(tmp_path: Path, prefect_api: str) -> None:
    """Under a pseudo-terminal (util-linux `script`), Prefect's log lines print above the bar,
    never inside its line; the bar shows rows, rows/s and time; the report says how to get
    the rejects."""
    import re
    import shutil

    from files.generate import GeneratorSpec, write_file

    script = shutil.which("script")
    assert script, "util-linux script is part of every Debian system"
    path = tmp_path / "users.csv"
    write_file(GeneratorSpec("users", 20_000, 0.05, seed=3), path)
    log = tmp_path / "terminal.log"
    command = f"{sys.executable} -m cli import users {path} --chunk-size 2000"
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "COLUMNS": "160", "LINES": "40", "TERM": "xterm"}
    done = subprocess.run([script, "-q", "-e", "-c", command, str(log)], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, log.read_text(errors="replace")[-3000:]
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", log.read_text(errors="replace"))
    lines = [line for line in re.split(r"[\r\n]", screen) if line.strip()]
    bars = [line for line in lines if "━" in line]
    assert bars and any("rows/s" in bar and " rows " in bar for bar in bars)
    assert not [bar for bar in bars if "INFO" in bar or "Task run" in bar or "Flow run" in bar]
    assert any("| INFO" in line for line in lines)  # the logs are still there, above the bar
    assert any(line.strip().startswith("│ job_key") for line in lines)
    assert any("all rejects: bulkflow rejects import:users:" in line for line in lines)


def test_rejects_to_a_file_says_what_it_wrote(tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", "users", str(DATA / "users.csv"), "--json"])
    report = json.loads(result.stdout)
    out = tmp_path / "rejects.ndjson"
    written = runner.invoke(app, ["rejects", report["job_key"], "-o", str(out)])
    assert written.exit_code == 0
    entries = sum(report["rejects_by_rule"].values())
    assert f"wrote {entries} reject entries of {report['job_key']} to {out}" in written.stderr


@pytest.mark.slow
def test_json_failures_print_one_object_with_the_reason_kind_and_exit_code(tmp_path: Path, prefect_api: str) -> None:
    """`--json` keeps its promise when the import fails: stdout is one JSON object, before a
    flow run exists (a missing file, an unknown resource) and inside one (bad content)."""
    missing = bulkflow(prefect_api, "import", "users", "nope.csv", "--json")
    assert missing.returncode == 2
    assert json.loads(missing.stdout) == {
        "status": "failed",
        "error": "file not found: nope.csv",
        "kind": "input",
        "exit_code": 2,
        "flow_run_id": None,
    }
    unknown = json.loads(bulkflow(prefect_api, "import", "widgets", str(DATA / "users.csv"), "--json").stdout)
    assert (unknown["kind"], unknown["exit_code"], unknown["flow_run_id"]) == ("parameters", 2, None)
    assert "widgets" in unknown["error"]
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("id,email,role\nu1,caf\u00e9@example.com,reader\n".encode("latin-1"))
    done = bulkflow(prefect_api, "import", "users", str(latin1), "--json")
    assert done.returncode == 2
    failed = json.loads(done.stdout)
    assert (failed["status"], failed["kind"], failed["exit_code"]) == ("failed", "input", 2)
    assert "not valid UTF-8 (line 2" in failed["error"]
    from uuid import UUID

    UUID(failed["flow_run_id"])
    assert find_job_key_of_run(failed["flow_run_id"]) is None  # nothing written: the file was refused while staged


def find_job_key_of_run(flow_run_id: str) -> str | None:
    from bulkflow.settings import Settings
    from tasks.jobs import find_job_key

    return find_job_key(Settings(), flow_run_id)


@pytest.mark.slow
def test_json_failure_of_the_environment_exits_1(prefect_api: str) -> None:
    env_file_free = {"DATABASE_URL": "postgresql://postgres@127.0.0.1:9/none"}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "import", "users", str(DATA / "users.csv"), "--json"],
        env={**os.environ, "PREFECT_API_URL": prefect_api, **env_file_free},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    failed = json.loads(done.stdout)
    assert (failed["status"], failed["kind"], failed["exit_code"]) == ("failed", "environment", 1)
    assert failed["flow_run_id"]


@pytest.mark.slow
def test_a_re_import_says_nothing_was_written_and_shows_the_job_apart(prefect_api: str) -> None:
    first = json.loads(bulkflow(prefect_api, "import", "users", str(DATA / "users.csv"), "--json").stdout)
    again = bulkflow(prefect_api, "import", "users", str(DATA / "users.csv"), "--json")
    report = json.loads(again.stdout)
    assert (report["rows_read"], report["inserted"], report["updated"], report["rejected"]) == (14, 0, 0, 0)
    assert report["already_committed"] == 14 and report["already_committed_by"] == [first["flow_run_id"]]
    assert report["continues_runs"] == []
    assert {k: report["job"][k] for k in ("rows_read", "inserted", "updated", "rejected")} == {
        "rows_read": 14,
        "inserted": 6,
        "updated": 0,
        "rejected": 8,
    }
    shown = bulkflow(prefect_api, "import", "users", str(DATA / "users.csv"))
    assert shown.returncode == 0, shown.stderr
    console = " ".join(shown.stdout.split())
    assert "│ inserted │ 0 │" in console and "│ rejected │ 0 │" in console
    assert "already committed │ 14 rows in 1 chunk(s), by" in console and first["flow_run_id"] in console
    assert "job totals │ 14 rows read, 6 inserted, 0 updated, 8 rejected" in console


def test_demo_imports_the_samples_and_ends_with_the_next_step(prefect_api: str) -> None:
    result = runner.invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("import ") >= 3  # one report table per sample file
    assert result.stderr.strip().splitlines()[-1].startswith("next: these runs, their logs and report artifacts are in")


def test_an_export_loads_neither_prefect_nor_pandera(tmp_path: Path) -> None:
    """A CLI export starts only what it uses: its time is the wire's, not an orchestrator's."""
    output = tmp_path / "users.csv"
    code = (
        "import sys\nfrom cli.app import app\n"
        "try:\n    app(['export', 'users', '--format', 'csv', '-o', sys.argv[1]])\n"
        "finally:\n    print(sorted(m for m in ('prefect', 'pandera') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(output)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]" and output.read_text().startswith("id,")
