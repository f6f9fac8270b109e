"""The exports' own paths against the export they replace: an incremental export of 1% of
a table changed against the full export, through the warm API (what a syncing consumer
polls); a partitioned Parquet dataset against one Parquet file, through the CLI; what
the change column (its default and index) costs a first load, COPY against COPY; and the
floor under every export (the driver's read alone) against COPY's CSV.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.data import BenchFile, header
from bench.measure import Measurement, alternate, measure
from bulkflow.embedded import embedded_url

if TYPE_CHECKING:
    from bench.comparison import Comparison
    from bench.harness import Bench

EXPORT_FLOOR_WORKLOADS = (
    "users, the driver's read alone in a command (the floor under the CLI's exports)",
    "users, the driver's read alone, connected (the floor under the warm API's exports)",
)

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


def compare_export_floor(bench: Bench, in_command: Comparison, connected: Comparison, resource: str) -> None:
    """The floor under an export of `resource` (`bench.export_floor`: the driver reading its
    rows as an export reads them, nothing formatted or written) against `COPY ... TO STDOUT
    (FORMAT csv)` to a file (`Bench.compare_export`): `in_command` times the whole command
    (Python, the libraries, a connection and the read: what a CLI export cannot go below),
    `connected` the read alone (what a warm API cannot go below). Both sides' reference is
    the same COPY run."""
    command = [sys.executable, "-m", "bench.export_floor", embedded_url(bench.env["BULKFLOW_HOME"]), resource]

    def read_alone(sink: Path) -> Measurement:  # writes nothing to `sink`
        run = measure(command, bench.env)
        rows, read_s = run.stdout.split()
        if int(rows) != in_command.rows:
            raise RuntimeError(f"the export floor read {int(rows):,} {resource} rows, not {in_command.rows:,}")
        connected.ours_s.append(float(read_s))
        for side in (in_command, connected):  # one process measured both
            side.ours_peak_rss_mb.append(run.peak_rss_mb)
        return run

    bench.compare_export(in_command, resource, "csv", through=read_alone)
    connected.copy_s.extend(in_command.copy_s)
