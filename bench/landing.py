"""Many small files: files of 1,000 users dropped into the landing folder under `bulkflow
serve`, against as many `bulkflow import` commands of the same files, one after the other.

The landing side is timed from the moment the files appear (each written under a hidden
name, then renamed, as partners are told to) until every one is recorded imported; the
watcher's interval and the runner's start of the pick-up are part of it, as they are of what
an operator waits for. `bulkflow serve` itself is started once, before, as it runs for days.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.measure import alternate
from files.generate import BROKEN_RULE, GeneratorSpec, generate

if TYPE_CHECKING:
    from bench.comparison import Comparison
    from bench.harness import Bench

LANDING_INTERVAL_S = 5
"""The watcher's interval under the bench: the smallest BULKFLOW_LANDING_INTERVAL allows."""
_DEADLINE_S = 900


def small_files(folder: Path, count: int, rows: int) -> list[Path]:
    """`count` users files of `rows` rows each, every one with users of its own (a content
    seen before would be skipped as a duplicate)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"users-{index:03d}.csv" for index in range(count)]
    if not all(path.exists() for path in paths):
        frame = generate(GeneratorSpec("users", count * rows, 0.0, id_less_rows=False)).drop(BROKEN_RULE)
        for index, path in enumerate(paths):
            frame.slice(index * rows, rows).write_csv(path, line_terminator="\r\n")
    return paths


def compare_landing(bench: Bench, comparison: Comparison, files: list[Path]) -> None:
    """`repeats` rounds, alternating which side goes first: the files as sequential
    `bulkflow import` commands (the reference), and the same files dropped into the landing
    folder of a running `bulkflow serve`."""
    landing = bench.config.workdir / "landing"
    with serving(bench, landing):
        alternate(
            bench.config.repeats,
            comparison,
            lambda: _sequential_imports(bench, files),
            lambda repeat: _landed(bench, landing, files),
        )


def _sequential_imports(bench: Bench, files: list[Path]) -> float:
    _empty_tables(bench)
    started = time.perf_counter()
    for path in files:
        bench.bulkflow("import", "users", str(path), "--json")
    seconds = time.perf_counter() - started
    _check_loaded(bench, len(files))
    return seconds


def _landed(bench: Bench, landing: Path, files: list[Path]) -> float:
    folder = landing / "users"
    shutil.rmtree(folder, ignore_errors=True)  # a landed file left there would be imported again
    folder.mkdir(parents=True)
    _empty_tables(bench)
    started = time.perf_counter()
    for path in files:
        hidden = folder / f".{path.name}"
        shutil.copyfile(path, hidden)
        hidden.rename(folder / path.name)
    while _imported(bench) < len(files):
        if time.perf_counter() - started > _DEADLINE_S:
            raise RuntimeError(f"landing: {_imported(bench)} of {len(files)} files imported in {_DEADLINE_S} s")
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    _check_loaded(bench, len(files))
    # Files left there would land again once the next round empties the tables, and a
    # pick-up of them would run beside that round's measurement.
    shutil.rmtree(folder)
    return seconds


def _empty_tables(bench: Bench) -> None:
    bench.sql("TRUNCATE users, landing_files, import_rejects, import_chunks, import_runs, import_jobs CASCADE")


def _imported(bench: Bench) -> int:
    return int(bench.sql("SELECT count(*) FROM landing_files WHERE outcome = 'imported'").stdout)


def _check_loaded(bench: Bench, files: int) -> None:
    """Every file was its own finished job, and every row is in the table."""
    jobs = int(bench.sql("SELECT count(*) FROM import_jobs WHERE finished_at IS NOT NULL").stdout)
    users = int(bench.sql("SELECT count(*) FROM users").stdout)
    if jobs != files:
        raise RuntimeError(f"landing: {jobs} finished import jobs for {files} files")
    if users != files * 1000:
        raise RuntimeError(f"landing: {users:,} users for {files} files of 1,000")


@contextmanager
def serving(bench: Bench, landing: Path) -> Iterator[None]:
    """`bulkflow serve` on the bench's Prefect API, watching `landing`, until the block ends."""
    landing.mkdir(parents=True, exist_ok=True)
    env = bench.env | {
        "BULKFLOW_LANDING_URL": str(landing.resolve()),
        "BULKFLOW_LANDING_INTERVAL": str(LANDING_INTERVAL_S),
    }
    log = open(bench.config.workdir / "serve.log", "wb")  # noqa: SIM115 - closed below
    serve = subprocess.Popen([sys.executable, "-m", "cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_deployment(env["PREFECT_API_URL"], "landing-pickup/landing", serve)
        yield
    finally:
        serve.terminate()
        serve.wait(timeout=60)
        log.close()


def _wait_for_deployment(api_url: str, name: str, serve: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if serve.poll() is not None:
            raise RuntimeError("bulkflow serve exited; see serve.log in the bench workdir")
        found = httpx.get(f"{api_url}/deployments/name/{name}", timeout=5)
        # a runner pauses its deployments when it stops: the earlier serve's stays paused until this one serves it
        if found.status_code == 200 and not found.json()["paused"]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"bulkflow serve registered no {name} deployment in 120 s")
