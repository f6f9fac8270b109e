"""Partitioned Parquet datasets from the database: read back with polars' hive partitioning
they are the table, row for row; the manifest lists every file as it is on disk; an
incremental dataset holds the changes, its deletes beside it; a job's re-run leaves no
file of an earlier attempt; a dataset of too many partitions is refused with nothing written."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from cli.app import app
from decisions import partitions
from files import writers
from flows.export_flow import export_flow, nightly_export
from schemas.reports import ExportManifest
from tests.helpers import load_samples, sql, table

pytestmark = pytest.mark.usefixtures("prefect_api", "db")

MANY_USERS = (
    "INSERT INTO users (id, email, name, role, active, created_at) "
    "SELECT 'gen_' || g, 'gen' || g || '@example.com', 'Gen ' || g, (ARRAY['admin', 'author', 'reader'])[g % 3 + 1], "
    "g % 2 = 0, timestamptz '2024-01-01 00:00+00' + g * interval '5 hours 17 minutes' "
    "FROM generate_series(1, 2000) g"
)
"""2,000 users over about 440 UTC days, on top of the samples (some without created_at)."""


def export(*options: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["export", *options])
    return result.exit_code, result.output


def export_dataset(location: Path, partition_by: str, *options: str) -> str:
    """`bulkflow export users -f parquet --partition-by ... -o location`: its output, once it succeeded."""
    code, output = export("users", "-f", "parquet", "--partition-by", partition_by, *options, "-o", str(location))
    assert code == 0, output
    return output


def manifest_of(location: Path) -> ExportManifest:
    return ExportManifest.model_validate_json(Path(f"{location}.manifest.json").read_text())


def read_back(location: Path | str) -> pl.DataFrame:
    return pl.scan_parquet(location, hive_partitioning=True).collect()


def assert_lists_every_file(manifest: ExportManifest, location: Path) -> None:
    on_disk = sorted(str(p) for p in location.rglob("*") if p.is_file())
    assert [f.location for f in manifest.files] == on_disk
    for listed in manifest.files:
        content = Path(listed.location).read_bytes()
        assert (listed.bytes, listed.sha256) == (len(content), hashlib.sha256(content).hexdigest())
        assert listed.rows == pl.read_parquet(listed.location).height
    assert manifest.rows == sum(f.rows for f in manifest.files)
    assert manifest.bytes == sum(f.bytes for f in manifest.files)


def test_a_dataset_by_day_read_back_is_the_table_row_for_row(tmp_path: Path) -> None:
    load_samples()
    sql(MANY_USERS)
    location = tmp_path / "users"
    output = export_dataset(location, "created_at:day")

    back = read_back(location)
    expected = table("users")
    assert back.select(expected.columns).sort("id").equals(expected)
    assert back.schema["created_at_day"] == pl.Date  # a reader sees the key's type
    days = back.select(pl.col("created_at").dt.date().alias("day"), "created_at_day")
    assert days.filter(pl.col("day").ne_missing(pl.col("created_at_day"))).is_empty()  # each row in its UTC day

    manifest = manifest_of(location)
    assert_lists_every_file(manifest, location)
    directories = {Path(f.location).parent.name for f in manifest.files}
    assert len(directories) == sql("SELECT count(DISTINCT created_at::date) + 1 FROM users")[0][0]  # + no day
    assert "created_at_day=__HIVE_DEFAULT_PARTITION__" in directories
    assert manifest.partition_by == "created_at:day" and manifest.job_id is None
    assert manifest.since is None and manifest.cursor is not None and f"cursor: {manifest.cursor}" in output
    assert f"into {len(manifest.files):,} files" in output

    code, output = export("users", "-f", "parquet", "--partition-by", "role", "-o", str(location))
    assert code == 2 and "already holds files" in output


def test_a_column_partition_keeps_the_column_and_escapes_its_values(tmp_path: Path) -> None:
    load_samples()
    sql("UPDATE users SET role = 'a/b=c %' WHERE id = 'usr_bob'")
    location = tmp_path / "by-role"
    export_dataset(location, "role", "--where", "active=true")
    expected = table("users").filter(pl.col("active"))
    assert read_back(location).select(expected.columns).sort("id").equals(expected)
    assert sorted(p.name for p in location.iterdir()) == sorted(
        {"role=a%2Fb%3Dc%20%25", *(f"role={r}" for r in expected["role"] if r != "a/b=c %")}
    )
    for part in location.rglob("*.parquet"):  # each file holds whole rows, its column too
        assert pl.read_parquet(part).columns == expected.columns


def test_a_limited_dataset_holds_the_first_rows_by_id(tmp_path: Path) -> None:
    load_samples()
    sql(MANY_USERS)
    location = tmp_path / "first"
    output = export_dataset(location, "created_at:month", "--limit", "5")
    first = [id for (id,) in sql("SELECT id FROM users ORDER BY id LIMIT 5")]
    assert sorted(read_back(location)["id"]) == sorted(first)
    assert manifest_of(location).cursor is None and "cursor:" not in output  # a limit gives no cursor


def test_an_incremental_dataset_holds_the_changes_and_its_deletes_lie_beside_it(tmp_path: Path) -> None:
    load_samples()
    sql(MANY_USERS)
    first = tmp_path / "full"
    export_dataset(first, "created_at:month")
    cursor = manifest_of(first).cursor
    assert cursor is not None

    sql("UPDATE users SET name = 'changed' WHERE id IN ('gen_10', 'gen_1500', 'usr_alice')")
    sql("DELETE FROM users WHERE id IN ('gen_11', 'gen_12')")
    changes = tmp_path / "changes"
    export_dataset(changes, "created_at:month", "--since", cursor)
    changed = table("users").filter(pl.col("name") == "changed")
    assert read_back(changes).select(changed.columns).sort("id").equals(changed)
    assert len(list(changes.iterdir())) == 2  # only the months with changes (alice and gen_10 share one)
    manifest = manifest_of(changes)
    assert_lists_every_file(manifest, changes)
    assert (manifest.since, manifest.rows, manifest.deleted) == (cursor, 3, 2)
    assert manifest.deletes is not None and manifest.deletes.location == f"{changes}.deletes.parquet"
    assert sorted(pl.read_parquet(manifest.deletes.location)["id"]) == ["gen_11", "gen_12"]


def test_a_dataset_of_too_many_partitions_is_refused_with_nothing_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_samples()
    monkeypatch.setattr(partitions, "MAX_PARTITIONS", 3)
    location = tmp_path / "by-email"
    code, output = export("users", "-f", "parquet", "--partition-by", "email", "-o", str(location))
    assert code == 2 and "makes 6 directories, more than 3" in output
    assert not location.exists() and not list(tmp_path.iterdir())


def test_a_dataset_that_fails_half_way_is_taken_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_samples()
    sql(MANY_USERS)
    started = writers._Dataset._start

    def disk_full_after_two_files(self: writers._Dataset, value: str | None, after: writers._OpenPart | None) -> object:
        if len(self.files) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return started(self, value, after)

    monkeypatch.setattr(writers._Dataset, "_start", disk_full_after_two_files)
    location = tmp_path / "users"
    code, output = export("users", "-f", "parquet", "--partition-by", "created_at:day", "-o", str(location))
    assert code != 0 and "No space left on device" in output and "Traceback" not in output
    assert not location.exists() and not Path(f"{location}.manifest.json").exists()


def test_a_job_s_re_run_leaves_no_file_of_an_earlier_attempt(tmp_path: Path) -> None:
    load_samples()
    nightly = nightly_export(partition_by={"users": "created_at:month", "comments": "created_at:day"})
    users = next(m for m in nightly if m.resource == "users")
    location = Path(users.location)
    assert users.partition_by == "created_at:month" and location.is_dir()
    assert read_back(location).select(table("users").columns).sort("id").equals(table("users"))
    assert_lists_every_file(users, location)
    assert json.loads(Path(f"{location}.manifest.json").read_text())["files"] == [f.model_dump() for f in users.files]

    stale = location / "created_at_month=1999-01" / "part-0000.parquet"  # as if an earlier attempt wrote it
    stale.parent.mkdir()
    stale.write_bytes(b"not this run's")
    again = export_flow(resource="users", format="parquet", partition_by="created_at:month")
    assert Path(again.location) != location  # a job of its own: its own directory
    sql("DELETE FROM export_cursors")  # the cursor unmoved, as after a failed run: the same files again
    rerun = export_flow(
        resource="users", format="parquet", cursor_name="nightly-export", partition_by="created_at:month"
    )
    assert rerun.location == users.location and not stale.exists()
    assert [f.sha256 for f in rerun.files] == [f.sha256 for f in users.files]
