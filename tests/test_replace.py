"""`--mode replace`: afterwards the table holds exactly the file's accepted rows, all or
nothing; rows other tables reference are not deleted silently (refused) unless
`--cascade`, which deletes and counts the dependents too."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bulkflow.errors import ReplaceRefused
from cli.app import app
from tests.helpers import import_file, load_samples, snapshot, sql, table

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
KEEP = "id,email,name,role\nusr_dora,dora@example.com,Dora,reader\nusr_oscar,oscar@example.com,Oscar II,reader\n"
"""Keeps usr_oscar (updated), adds usr_dora; every other user goes."""


@pytest.fixture()
def keep_file(tmp_path: Path) -> Path:
    path = tmp_path / "keep.csv"
    path.write_text(KEEP + "bad,not-an-email,Bad,reader\n")
    return path


def test_replace_leaves_exactly_the_files_accepted_rows(keep_file: Path) -> None:
    import_file("users", _users_only(keep_file.parent))
    report = import_file("users", keep_file, mode="replace")
    assert (report.inserted, report.updated, report.rejected, report.deleted) == (1, 1, 1, 5)
    assert report.atomic and report.deleted_dependents == {}
    users = table("users")
    assert users.get_column("id").to_list() == ["usr_dora", "usr_oscar"]
    assert users.get_column("name").to_list() == ["Dora", "Oscar II"]


def _users_only(folder: Path) -> Path:
    """Six users nobody references."""
    path = folder / "six.csv"
    rows = "".join(f"usr_u{i},u{i}@example.com,U{i},reader\n" for i in range(5))
    path.write_text("id,email,name,role\n" + rows + "usr_oscar,oscar@example.com,Oscar,reader\n")
    return path


def test_replace_refuses_to_delete_referenced_rows_without_cascade(keep_file: Path) -> None:
    load_samples()
    before = snapshot()
    result = CliRunner().invoke(app, ["import", "users", str(keep_file), "--mode", "replace"])
    assert result.exit_code == 2, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: --mode replace would delete ") and "rows of articles reference (author_id)" in line
    assert "nothing was applied; add --cascade" in line
    after = snapshot()
    for name, frame in before.items():
        assert after[name].equals(frame), name
    assert sql("SELECT count(*) FROM pg_tables WHERE tablename LIKE '_bulkflow_job_%'") == [(0,)]
    with pytest.raises(ReplaceRefused):
        import_file("users", keep_file, mode="replace")


def test_replace_with_cascade_deletes_and_counts_the_dependents(keep_file: Path) -> None:
    load_samples()
    articles, comments = table("articles").height, table("comments").height
    gone = set(table("users").get_column("id").to_list()) - {"usr_oscar"}
    report = import_file("users", keep_file, mode="replace", cascade=True)
    assert report.deleted == len(gone) > 0
    assert table("articles").height == 0 and table("comments").height == 0  # every author and commenter went
    assert report.deleted_dependents == {"articles": articles, "comments": comments}
    recorded = sql(
        f"SELECT deleted, deleted_dependents->>'comments' FROM import_jobs WHERE job_key = '{report.job_key}'"
    )
    assert recorded == [(len(gone), str(comments))]


def test_a_dry_run_of_a_replace_predicts_the_deletes_and_writes_nothing(keep_file: Path) -> None:
    load_samples()
    before = snapshot()
    dry = import_file("users", keep_file, mode="replace", cascade=True, dry_run=True)
    after = snapshot()
    for name, frame in before.items():
        assert after[name].equals(frame), name
    assert sql("SELECT count(*) FROM pg_tables WHERE tablename LIKE '_bulkflow_job_%'") == [(0,)]
    real = import_file("users", keep_file, mode="replace", cascade=True)
    predicted = ("inserted", "updated", "rejected", "deleted", "deleted_dependents")
    assert dry.dry_run and dry.deleted > 0 and dry.deleted_dependents
    assert dry.model_dump(include=set(predicted)) == real.model_dump(include=set(predicted))


def test_a_dry_run_of_a_refused_replace_is_refused_as_the_import_would_be(keep_file: Path) -> None:
    load_samples()
    before = snapshot()
    with pytest.raises(ReplaceRefused, match="rows of articles reference"):
        import_file("users", keep_file, mode="replace", dry_run=True)
    after = snapshot()
    for name, frame in before.items():
        assert after[name].equals(frame), name
    assert sql("SELECT count(*) FROM pg_tables WHERE tablename LIKE '_bulkflow_job_%'") == [(0,)]
