"""One benchmark run: imports and exports, bulkflow against COPY, alternating, then memory.

The workloads, in the order they run, each a `Comparison` of the commands in
`bench/harness.py`; the Prefect server the measured commands talk to is the given one or
the bench's own.
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.api_load import api_server, compare_api_export, concurrent_uploads
from bench.comparison import BenchConfig, Comparison
from bench.data import PARTNER_PROFILE, upsert_variant
from bench.exports import (
    EXPORT_FLOOR_WORKLOADS,
    compare_change_column_cost,
    compare_export_floor,
    compare_incremental_export,
    compare_partitioned_export,
)
from bench.harness import Bench
from bench.landing import compare_landing, small_files
from schemas import RESOURCES

PARTNER_WORKLOAD = "users, ;-separated cp1252 (Excel) with a profile"
"""Its target is against the plain users row: at most 1.25x its time (`bench.report`)."""
UPSERT_WORKLOAD = "users into the full table: half changed, half new"
INCREMENTAL_WORKLOAD = "users ndjson since a cursor through the API (curl), 1% of the rows changed"
CHANGE_COLUMN_WORKLOAD = "users, COPY (not bulkflow) into a table with the change column (default + index)"


def landing_workload(files: int) -> str:
    return f"{files} files of 1,000 users dropped under bulkflow serve"


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
        in_command, connected = (Comparison("export", w, n, None, "COPY (FORMAT csv)") for w in EXPORT_FLOOR_WORKLOADS)
        compare_export_floor(bench, in_command, connected, "users")
        exports += [in_command, connected]
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
