"""What the `bulkflow` command shows before any server starts: help, one-line errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli.app import app

runner = CliRunner()


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every command under a (typer's own) click group, with its full name."""
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if hasattr(command, "commands"):
            found += _commands(command, f"{prefix}{name} ")
    return found


def test_every_command_summary_is_one_whole_sentence_on_its_line() -> None:
    """`bulkflow --help` lists each command by the first paragraph of its help: a line
    break inside it showed as a sentence cut mid-way."""
    for name, command in _commands(typer.main.get_command(app)):
        summary = (command.help or "").strip().split("\n\n")[0]
        assert summary and "\n" not in summary, f"{name}: {summary!r}"
    for arguments in ([], ["db"], ["automations"]):
        shown = runner.invoke(app, [*arguments, "--help"], terminal_width=200, env={"COLUMNS": "200"}).stdout
        listed = shown.split("Commands")[1]
        rows = [line for line in listed.splitlines() if line.startswith("│")]
        continued = [line for line in rows if re.match(r"│\s{4,}\S", line)]
        assert rows and not continued, continued


def test_a_directory_is_named_as_a_directory_whatever_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    result = runner.invoke(app, ["import", "users", str(folder)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {folder} is a directory: give the path of a file"


@pytest.mark.parametrize("name", ["missing.xlsx", "missing"])
def test_a_missing_file_is_named_as_missing_whatever_its_name(tmp_path: Path, name: str) -> None:
    result = runner.invoke(app, ["import", "users", str(tmp_path / name)])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: file not found: {tmp_path / name}"


def test_the_demo_ends_with_where_to_see_its_runs() -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    from cli.data import next_step

    with temporary_settings(
        updates={PREFECT_API_URL: "http://127.0.0.1:4200/api", PREFECT_UI_URL: "http://127.0.0.1:4200"}
    ):
        assert (
            next_step()
            == "next: these runs, their logs and report artifacts are in the Prefect UI at http://127.0.0.1:4200/runs"
        )
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        told = next_step()
    assert "prefect server start" in told and "export PREFECT_API_URL=http://127.0.0.1:4200/api" in told


def test_an_option_that_cannot_be_used_is_named_with_what_it_takes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", "users", "x.csv", "--delimiter", ";;", "--encoding", "klingon"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: --delimiter ';;': the delimiter is one ASCII character (not a line end), e.g. ';' or '\\t'; "
        "--encoding 'klingon': unknown encoding 'klingon': e.g. utf-8, utf-16, latin-1, cp1252"
    )


def test_profiles_check_shows_how_a_file_is_read_without_importing(tmp_path: Path) -> None:
    import json

    from tests.partner_corpus import CORPUS, SHIPPED_PROFILES

    result = runner.invoke(
        app,
        ["profiles", "check", "excel-de", str(CORPUS / "excel-de.csv")],
        env={"BULKFLOW_PROFILES_DIR": str(SHIPPED_PROFILES)},
    )
    assert result.exit_code == 0, result.stderr
    reading = json.loads(result.stdout)
    assert (reading["delimiter"], reading["delimiter_from"], reading["encoding"]) == (";", "sep line", "cp1252")
    assert {"column": "E-Mail", "field": "email", "by": "map"} in reading["header_matches"]
    listed = runner.invoke(app, ["profiles", "list"], env={"BULKFLOW_PROFILES_DIR": str(SHIPPED_PROFILES)})
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()] == [["crm", "users"], ["excel-de", "users"]]
