"""The import flow end to end on a real PostgreSQL and a real Prefect API."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from bulkflow.errors import DatabaseError, DatabaseUnavailable, first_line
from files.generate import GeneratorSpec, write_file
from tests.helpers import DATA, import_file, load_samples, reset_imports, snapshot, sql, table

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


def test_sample_files_load_with_exact_counts() -> None:
    users, articles, comments = load_samples()
    assert (users.rows_read, users.inserted, users.rejected) == (14, 6, 8)
    assert (articles.rows_read, articles.inserted, articles.rejected) == (12, 4, 8)
    assert (comments.rows_read, comments.inserted, comments.rejected) == (10, 3, 7)
    assert articles.rejects_by_rule["unknown_author"] == 2
    assert comments.rejects_by_rule == {
        "unknown_article": 2,
        "unknown_user": 2,
        "body_too_long": 1,
        "duplicate_id": 1,
        "missing_id": 1,
        "required": 1,
    }
    assert table("users").height == 6 and table("articles").height == 4 and table("comments").height == 3


def test_second_import_changes_nothing() -> None:
    first = load_samples()[0]
    before = snapshot()
    again = import_file("users", DATA / "users.csv")
    assert again.chunks_skipped == again.chunks == 1
    # what this run did: nothing written, every row read found in a chunk the first run committed
    assert (again.rows_read, again.inserted, again.updated, again.rejected) == (14, 0, 0, 0)
    assert again.already_committed == 14 and again.already_committed_by == [first.flow_run_id]
    assert again.rejects_by_rule == {} and again.continues_runs == []  # a finished job is repeated, not continued
    job = again.job  # the job's totals, apart
    assert (job.rows_read, job.inserted, job.rejected) == (14, 6, 8)
    assert snapshot()["users"].equals(before["users"])
    assert (
        sql("SELECT count(*) FROM import_rejects")[0][0] == sum(job.rejects_by_rule.values()) + 8 + 8
    )  # users' entries once, plus articles' and comments' entries


def test_same_content_under_another_name_is_the_same_job(tmp_path: Path) -> None:
    first = import_file("users", DATA / "users.csv")
    copy = tmp_path / "renamed.csv"
    shutil.copy(DATA / "users.csv", copy)
    second = import_file("users", copy)
    assert second.job_key == first.job_key and second.chunks_skipped == 1


def _tuples_updated(table_name: str) -> int:
    return int(sql(f"SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = '{table_name}'")[0][0])


def test_an_identical_re_import_under_a_new_key_is_unchanged_and_writes_no_tuple(tmp_path: Path) -> None:
    first = import_file("users", DATA / "users.csv")
    tuples = sql("SELECT id, xmin::text FROM users ORDER BY id")
    updated_before = _tuples_updated("users")
    again = import_file("users", DATA / "users.csv", idempotency_key="same-content-another-job")
    assert again.chunks_skipped == 0 and again.already_committed == 0  # a new job: every chunk is written again
    assert (again.inserted, again.updated, again.unchanged, again.rejected) == (0, 0, first.inserted, first.rejected)
    assert again.job.unchanged == first.inserted and again.invariant_holds
    assert sql("SELECT id, xmin::text FROM users ORDER BY id") == tuples  # no row got a new tuple
    # One real change, then wait for the server's statistics to show it: exactly one update in all.
    changed = tmp_path / "one-change.csv"
    changed.write_text("id,email,name,role\nusr_bob,bob@example.com,Robert,admin\n")
    assert import_file("users", changed).updated == 1
    deadline = time.monotonic() + 30
    while _tuples_updated("users") == updated_before and time.monotonic() < deadline:
        time.sleep(0.5)
        sql("SELECT pg_stat_clear_snapshot()")
    assert _tuples_updated("users") == updated_before + 1


def test_changed_file_updates_rows(tmp_path: Path) -> None:
    import_file("users", DATA / "users.csv")
    changed = tmp_path / "users.csv"
    changed.write_text("id,email,name,role\nusr_bob,bob@example.com,Robert,admin\n,dave@example.com,David,editor\n")
    report = import_file("users", changed)
    assert (report.inserted, report.updated, report.rejected) == (0, 2, 0)
    users = table("users")
    assert users.filter(pl.col("id") == "usr_bob")["name"].item() == "Robert"
    assert users.filter(pl.col("email") == "dave@example.com")["name"].item() == "David"


def test_id_less_rows_get_deterministic_ids() -> None:
    load_samples()
    dave = table("users").filter(pl.col("email") == "dave@example.com")["id"].item()
    article = table("articles").filter(pl.col("slug") == "no-id-article")["id"].item()
    reset_imports()
    load_samples()
    assert table("users").filter(pl.col("email") == "dave@example.com")["id"].item() == dave
    assert table("articles").filter(pl.col("slug") == "no-id-article")["id"].item() == article
    assert len(dave) == 36  # a UUID derived from the natural key


def test_email_held_by_another_id_is_rejected(tmp_path: Path) -> None:
    import_file("users", DATA / "users.csv")
    clash = tmp_path / "clash.csv"
    clash.write_text("id,email,role\nusr_new,ALICE@example.com,reader\n")
    report = import_file("users", clash)
    assert report.rejects_by_rule == {"email_taken": 1} and report.rejected == 1


def test_every_format_loads_the_same_tables(tmp_path: Path) -> None:
    spec = GeneratorSpec("users", rows=300, invalid_share=0.2, seed=3)
    states = {}
    for name in ("u.csv", "u.ndjson", "u.json", "u.parquet", "u.csv.gz", "u.ndjson.gz"):
        reset_imports()
        write_file(spec, tmp_path / name)
        report = import_file("users", tmp_path / name, chunk_size=64)
        assert report.rows_read == 300
        states[name] = (table("users"), report.rejected, report.rejects_by_rule)
    reference = states["u.csv"]
    for name, (users, rejected, by_rule) in states.items():
        assert users.equals(reference[0]), name
        assert (rejected, by_rule) == reference[1:], name


def test_articles_and_comments_round_out_with_foreign_keys(tmp_path: Path) -> None:
    write_file(GeneratorSpec("users", 500, 0.0, users=500), tmp_path / "users.csv")
    write_file(GeneratorSpec("articles", 400, 0.25, users=500), tmp_path / "articles.ndjson")
    write_file(GeneratorSpec("comments", 400, 0.25, users=500, articles=400), tmp_path / "comments.parquet")
    reports = [
        import_file(r, tmp_path / f, chunk_size=50)
        for r, f in [("users", "users.csv"), ("articles", "articles.ndjson"), ("comments", "comments.parquet")]
    ]
    for report in reports:
        assert report.accounted == report.rows_read
    assert reports[1].rejects_by_rule.get("unknown_author", 0) > 0
    assert reports[2].rejects_by_rule.get("unknown_article", 0) > 0
    orphans = sql("SELECT count(*) FROM comments c LEFT JOIN articles a ON a.id = c.article_id WHERE a.id IS NULL")
    assert orphans[0][0] == 0


def test_duplicates_across_a_chunk_boundary(tmp_path: Path) -> None:
    path = tmp_path / "dups.csv"
    path.write_text(
        "id,email,role\nu1,a@example.com,reader\nu2,b@example.com,reader\n"
        "u3,A@EXAMPLE.com,reader\nu2,c@example.com,reader\nu5,e@example.com,reader\n"
    )
    report = import_file("users", path, chunk_size=2)
    assert report.chunks == 3
    assert report.rejects_by_rule == {"duplicate_email": 1, "duplicate_id": 1}
    assert sorted(table("users")["id"]) == ["u1", "u2", "u5"]


def test_rejects_keep_line_field_rule_value_and_raw() -> None:
    import_file("users", DATA / "users.csv")
    rows = sql("SELECT line, field, rule, value, raw FROM import_rejects WHERE rule = 'invalid_role'")
    line, field, rule, value, raw = rows[0]
    # header on line 1, four one-line records, erin spans lines 6-7, frank 8, grace 9
    assert (line, field, rule, value) == (9, "role", "invalid_role", "manager")
    assert json.loads(raw)["email"] == "grace@example.com"


def test_missing_required_column_fails_before_loading(tmp_path: Path) -> None:
    from bulkflow.errors import InputError

    path = tmp_path / "nocol.csv"
    path.write_text("id,name\nu1,Ann\n")
    with pytest.raises(InputError, match="lacks required column"):
        import_file("users", path)
    assert table("users").height == 0


def test_invariant_on_a_generated_file(tmp_path: Path) -> None:
    path = tmp_path / "users.csv.gz"
    write_file(GeneratorSpec("users", rows=5000, invalid_share=0.1, seed=11), path)
    report = import_file("users", path, chunk_size=777)
    assert report.rows_read == 5000
    assert report.accounted == 5000
    assert 0 < report.rejected < 5000
    assert table("users").height == report.inserted
    with gzip.open(path, "rt") as fh:
        assert sum(1 for _ in fh) >= 5001


def test_generated_partner_files_load_with_exact_counts(tmp_path: Path) -> None:
    """Like the assignment's users_huge.csv (10k rows, CRLF, missing ids, foo@bar emails,
    role manager, case-varied duplicate emails), then articles and comments as NDJSON."""
    from files.generate import expected_rejects, generate

    specs = {
        "users": (GeneratorSpec("users", 10_000, 0.08, seed=1), "users.csv"),
        "articles": (GeneratorSpec("articles", 3_000, 0.1, seed=2, users=10_000), "articles.ndjson"),
        "comments": (GeneratorSpec("comments", 3_000, 0.1, seed=3, users=10_000, articles=3_000), "comments.ndjson"),
    }
    # References must point at valid rows: load clean users and articles to reference.
    write_file(GeneratorSpec("users", 10_000, 0.0), tmp_path / "clean_users.csv")
    write_file(GeneratorSpec("articles", 3_000, 0.0, users=10_000), tmp_path / "clean_articles.csv")
    import_file("users", tmp_path / "clean_users.csv")
    import_file("articles", tmp_path / "clean_articles.csv")
    assert (tmp_path / "clean_users.csv").read_bytes().count(b"\r\n") == 10_001
    for resource, (spec, name) in specs.items():
        write_file(spec, tmp_path / name)
        expected = expected_rejects(generate(spec))
        report = import_file(resource, tmp_path / name, chunk_size=1_000)
        assert report.rejects_by_rule == expected, resource
        assert report.rejected == sum(expected.values()), resource
        assert report.rows_read == spec.rows


def _artifacts_of(flow_run_id: str | None) -> list[Any]:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    assert flow_run_id is not None
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)]))
        )


def test_run_publishes_progress_report_and_rejects_artifacts() -> None:
    """A file of several chunks shows its progress; a file of one chunk only its report and
    rejects, since its bar would appear at 100 just before the report."""
    one_chunk = _artifacts_of(import_file("users", DATA / "users.csv").flow_run_id)
    chunks = _artifacts_of(import_file("users", DATA / "users.csv", chunk_size=5, idempotency_key="by-5").flow_run_id)
    assert "progress" not in {a.type for a in one_chunk}
    assert [a.data for a in chunks if a.type == "progress"] == [100.0]
    for artifacts in (one_chunk, chunks):
        tables = [a for a in artifacts if a.type == "table"]
        assert {a.key for a in tables} == {"import-users-users-csv-report", "import-users-users-csv-rejects"}
        summary = next(a for a in tables if a.key == "import-users-users-csv-report")
        assert "rejects: invalid_role" in str(summary.data) and "rows_per_s" in str(summary.data)


def test_import_from_an_http_url(file_server: tuple[str, Path]) -> None:
    """A remote source is streamed once into staging, then imported like a local file."""
    base_url, folder = file_server
    (folder / "users.csv.gz").write_bytes(gzip.compress((DATA / "users.csv").read_bytes()))
    url = f"{base_url}/users.csv.gz"
    staging = Path(os.environ["BULKFLOW_HOME"]) / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    before = set(staging.iterdir())  # what other tests of this process left, if any
    report = import_file("users", url)
    from bulkflow.errors import InputError

    with pytest.raises(InputError, match="HTTP 404"):
        import_file("users", url.replace("users.csv.gz", "missing.csv"))
    assert (report.rows_read, report.inserted, report.rejected) == (14, 6, 8)
    assert report.source == url
    assert set(staging.iterdir()) == before  # the staged copies are removed after the runs


def test_header_only_file_completes_with_zero_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("id,email,role\r\n")
    report = import_file("users", path)
    assert (report.status, report.rows_read, report.chunks) == ("completed", 0, 0)


def test_the_progress_of_a_one_chunk_file_moves_before_it_commits() -> None:
    """The bar's position as the CLI sees it: up while the only chunk is read and checked,
    whole once it commits, never back."""
    from tasks.report import add_progress_listener

    seen: list[tuple[int, float, float]] = []
    remove = add_progress_listener(lambda rows, fraction, position: seen.append((rows, fraction, position)))
    try:
        import_file("users", DATA / "users.csv")
    finally:
        remove()
    positions = [position for _, _, position in seen]
    assert positions == sorted(positions) and positions[-1] == 1.0
    in_flight = [(rows, position) for rows, fraction, position in seen if fraction == 0.0 and 0 < position < 1]
    assert len({position for _, position in in_flight}) >= 2 and all(rows == 0 for rows, _ in in_flight)


def test_a_failed_run_records_on_its_job_why_and_whether_a_retry_may_cure_it() -> None:
    sql(
        "CREATE OR REPLACE FUNCTION refuse_chunk() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the disk is on fire' USING ERRCODE = '58030'; END $$"
    )
    sql("CREATE TRIGGER refuse_chunk BEFORE INSERT ON import_chunks FOR EACH ROW EXECUTE FUNCTION refuse_chunk()")
    try:
        with pytest.raises(DatabaseError) as failed:
            import_file("users", DATA / "users.csv")
    finally:
        sql("DROP TRIGGER IF EXISTS refuse_chunk ON import_chunks")
    assert failed.value.sqlstate == "58030" and not isinstance(failed.value, DatabaseUnavailable)
    recorded = sql("SELECT failure_class, failure_retryable, failure_message, failed_at IS NOT NULL FROM import_jobs")
    assert recorded == [("DatabaseError", False, first_line(failed.value), True)]
    assert recorded[0][2].startswith("PostgreSQL refused a statement: ") and "the disk is on fire" in recorded[0][2]
    import_file("users", DATA / "users.csv")  # the job's next run completes: its failure record is cleared
    assert sql("SELECT failure_class, failure_retryable, failed_at FROM import_jobs") == [(None, None, None)]
