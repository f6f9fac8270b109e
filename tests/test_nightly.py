"""The nightly deployment's flow: incremental, its cursors kept in the database with its
manifests, a full snapshot every BULKFLOW_FULL_EVERY_DAYS, a failed run moving nothing and
its re-run writing the same files; and the pruning of tombstones and old history."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from bulkflow.errors import ParameterError
from decisions.exports import ExportFormat
from flows.export_flow import export_flow, nightly_export
from schemas.parameters import ResourceName
from schemas.reports import ExportManifest
from tests.helpers import load_samples, sql

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


def kept() -> dict[str, str]:
    return dict(sql("SELECT resource, cursor FROM export_cursors WHERE name = 'nightly-export'"))


def lines(manifest: ExportManifest) -> list[dict]:
    return [json.loads(line) for line in Path(manifest.location).read_text().splitlines()]


def by_resource(manifests: list[ExportManifest]) -> dict[str, ExportManifest]:
    return {m.resource: m for m in manifests}


def kept_export(resource: str = "users", format: ExportFormat = "ndjson") -> ExportManifest:
    """One export of `resource` keeping its cursor as the nightly does (cheaper than the nightly's three)."""
    return export_flow(resource=cast(ResourceName, resource), format=format, cursor_name="nightly-export")


def test_the_nightly_writes_the_changes_since_its_last_run_and_keeps_its_cursors(
    tmp_path: Path, settings_env: Callable[..., None]
) -> None:
    settings_env(BULKFLOW_EXPORT_URL=str(tmp_path / "exports"))
    load_samples()
    first = by_resource(nightly_export(format="ndjson"))
    assert all(m.since is None and m.cursor_name == "nightly-export" for m in first.values())  # full the first time
    assert Path(first["users"].location).parent == tmp_path / "exports" / "nightly-export"
    assert first["users"].rows == len(sql("SELECT id FROM users"))
    assert kept() == {resource: m.cursor for resource, m in first.items()}

    sql("UPDATE users SET name = 'Bob Nightly' WHERE id = 'usr_bob'")
    comment = sql("SELECT min(id) FROM comments")[0][0]
    sql(f"DELETE FROM comments WHERE id = '{comment}'")
    second = by_resource(nightly_export(format="ndjson"))
    assert {r: m.since for r, m in second.items()} == {r: m.cursor for r, m in first.items()}
    assert [(row["id"], row["name"]) for row in lines(second["users"])] == [("usr_bob", "Bob Nightly")]
    assert lines(second["comments"]) == [
        {"id": comment, "_deleted": True, "_deleted_at": lines(second["comments"])[0]["_deleted_at"]}
    ]
    assert second["comments"].deleted == 1 and second["articles"].rows == 0
    assert kept() == {resource: m.cursor for resource, m in second.items()}
    recorded = sql(
        "SELECT manifest->>'cursor' FROM export_jobs WHERE flow_run_id = '" + str(second["users"].job_id) + "'"
    )
    assert recorded == [(kept()["users"],)]  # the cursor and the manifest were committed together


def test_a_failed_run_leaves_the_cursor_and_its_re_run_writes_the_same_files(
    tmp_path: Path, settings_env: Callable[..., None]
) -> None:
    root = tmp_path / "exports"
    settings_env(BULKFLOW_EXPORT_URL=str(root))
    load_samples()
    kept_export(format="csv")
    before = kept()
    sql("UPDATE users SET role = 'editor' WHERE id = 'usr_alice'")
    settings_env(BULKFLOW_EXPORT_URL=str(tmp_path / "not-a-folder"))
    (tmp_path / "not-a-folder").write_text("a file where the exports should go")
    with pytest.raises(Exception):  # noqa: B017 - the storage's own error; what matters is what it left
        kept_export(format="csv")
    assert kept() == before

    settings_env(BULKFLOW_EXPORT_URL=str(root))
    rerun = kept_export(format="csv")
    assert rerun.since == before["users"] and rerun.rows == 1
    again = kept_export(format="csv")  # nothing changed since: an empty file, of its own name
    assert again.rows == 0 and again.location != rerun.location
    assert rerun.deletes is not None and Path(rerun.deletes.location).exists()
    assert rerun.location == str(root / "nightly-export" / rerun.location.rsplit("/", 1)[1])


def test_a_full_snapshot_comes_back_every_full_every_days(tmp_path: Path, settings_env: Callable[..., None]) -> None:
    settings_env(BULKFLOW_EXPORT_URL=str(tmp_path / "exports"), BULKFLOW_FULL_EVERY_DAYS="7")
    load_samples()
    kept_export()
    assert kept_export().since is not None
    sql("UPDATE export_cursors SET full_at = full_at - interval '7 days'")
    third = kept_export()
    assert third.since is None and third.rows == len(sql("SELECT id FROM users"))
    assert kept_export().since == third.cursor  # the full one reset the clock


def test_the_nightly_prunes_tombstones_and_history_past_their_days(
    tmp_path: Path, settings_env: Callable[..., None]
) -> None:
    settings_env(BULKFLOW_EXPORT_URL=str(tmp_path / "exports"), BULKFLOW_HISTORY_DAYS="100")
    load_samples()
    sql("INSERT INTO export_tombstones (resource, id, deleted_at) VALUES ('users', 'old', now() - interval '31 days')")
    sql("INSERT INTO export_tombstones (resource, id) VALUES ('users', 'recent')")
    old_job = sql("SELECT min(job_key) FROM import_jobs WHERE resource = 'users'")[0][0]
    sql(f"UPDATE import_jobs SET created_at = now() - interval '101 days' WHERE job_key = '{old_job}'")
    nightly_export(format="ndjson")
    assert sql("SELECT id FROM export_tombstones WHERE id IN ('old', 'recent')") == [("recent",)]
    for ledger in ("import_jobs", "import_runs", "import_chunks", "import_rejects"):
        assert sql(f"SELECT count(*) FROM {ledger} WHERE job_key = '{old_job}'") == [(0,)], ledger
    assert sql("SELECT count(*) FROM import_jobs")[0][0] == 2  # articles and comments stay


def test_an_export_whose_kept_cursor_cannot_be_honoured_is_a_full_one(
    tmp_path: Path, settings_env: Callable[..., None]
) -> None:
    settings_env(BULKFLOW_EXPORT_URL=str(tmp_path / "exports"))
    load_samples()
    kept_export("comments")
    sql("TRUNCATE comments")  # leaves no tombstones: only a full export tells the consumer
    after = kept_export("comments")
    assert after.since is None and after.rows == 0
    with pytest.raises(ParameterError, match="neither since nor limit"):
        export_flow(resource="users", cursor_name="nightly-export", limit=1)
