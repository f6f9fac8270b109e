"""The exports' own paths against the export they replace: an incremental export of 1% of
a table changed against the full export, through the warm API (what a syncing consumer
polls); a partitioned Parquet dataset against one Parquet file, through the CLI; and what
the change column (its default and index) costs a first load, COPY against COPY.
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

import httpx

from bench.data import BenchFile, header
from bench.measure import alternate, measure

if TYPE_CHECKING:
    from bench.comparison import Comparison
    from bench.harness import Bench

CHANGED_SHARE = 100
"""One row in this many is changed before the incremental export."""


def compare_incremental_export(bench: Bench, comparison: Comparison, base: str, resource: str) -> None:
    """`curl` of GET /v1/exports?since=CURSOR (NDJSON) after 1% of the rows changed, against
    `curl` of the full export: the time a consumer that syncs waits, against re-reading all."""
    full = f"{base}/v1/exports?resource={resource}&format=ndjson"
    with httpx.stream("GET", full, timeout=600) as answer:  # its cursor is a header: the rows are not read
        cursor = answer.headers["X-Bulkflow-Cursor"]
    changed = comparison.rows // CHANGED_SHARE
    bench.sql(
        f"UPDATE {resource} SET name = name || '.' WHERE id IN (SELECT id FROM {resource} ORDER BY md5(id) LIMIT {changed})"
    )
    sink = bench.files / "incremental.ndjson"

    def ours(repeat: int) -> float:
        seconds = measure(["curl", "-sSf", "-o", str(sink), f"{full}&since={cursor}"], bench.env).seconds
        if (lines := sink.read_bytes().count(b"\n")) != changed:
            raise RuntimeError(f"incremental export of {resource}: {lines:,} rows, not the {changed:,} changed")
        return seconds

    def reference() -> float:
        return measure(["curl", "-sSf", "-o", str(sink), full], bench.env).seconds

    alternate(bench.config.repeats, comparison, reference, ours)
    sink.unlink(missing_ok=True)


def compare_partitioned_export(bench: Bench, comparison: Comparison, resource: str, partition_by: str) -> None:
    """`bulkflow export --partition-by` to a new directory against `bulkflow export` of the
    same rows to one Parquet file."""
    dataset, single = bench.files / "dataset", bench.files / "export.parquet"

    def ours(repeat: int) -> float:
        shutil.rmtree(dataset, ignore_errors=True)
        run = bench.bulkflow("export", resource, "-f", "parquet", "--partition-by", partition_by, "-o", str(dataset))
        comparison.ours_peak_rss_mb.append(run.peak_rss_mb)
        return run.seconds

    def reference() -> float:
        return bench.bulkflow("export", resource, "-f", "parquet", "-o", str(single)).seconds

    alternate(bench.config.repeats, comparison, reference, ours)
    shutil.rmtree(dataset, ignore_errors=True)
    for written in (single, dataset.with_name(f"{dataset.name}.manifest.json")):
        written.unlink(missing_ok=True)


def compare_change_column_cost(bench: Bench, comparison: Comparison, file: BenchFile) -> None:
    """`\\copy` of the users file into the table as bulkflow's is (its change column: a
    default of the writing transaction, and its index) against `\\copy` into the table
    without it: what the change column costs a first load (bulkflow is on neither side)."""
    bench.sql(
        "CREATE TABLE IF NOT EXISTS bench_copy.users_unchanged (LIKE bench_copy.users INCLUDING ALL); "
        "ALTER TABLE bench_copy.users_unchanged DROP COLUMN IF EXISTS bulkflow_xid"
    )
    columns = ",".join(header(file.copy))

    def without_it() -> float:
        bench.sql("TRUNCATE bench_copy.users_unchanged; CHECKPOINT")
        copy = f"\\copy bench_copy.users_unchanged ({columns}) FROM '{file.copy}' WITH (FORMAT csv, HEADER)"
        return bench.sql(copy).seconds

    alternate(bench.config.repeats, comparison, without_it, lambda repeat: bench.copy_import(file))
    bench.sql("DROP TABLE bench_copy.users_unchanged")
