"""The HTTP API, warm: exports streamed to `curl` against PostgreSQL's COPY, and many uploads
sent at once.

`bulkflow api` is started once, before, as it runs for days; what is timed is what a client
waits for. An upload is answered once it is stored and its run created: the runs it creates
are not served here (no runner takes them) and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.measure import measure

if TYPE_CHECKING:
    from bench.comparison import Comparison
    from bench.harness import Bench


@contextmanager
def api_server(bench: Bench) -> Iterator[str]:
    """`bulkflow api` on a free port, with the bench's database and Prefect API: its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(bench.config.workdir / "api.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "api", "--port", str(port)], env=bench.env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError("bulkflow api exited; see api.log in the bench workdir")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("bulkflow api did not answer in 120 s")
            time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def compare_api_export(bench: Bench, comparison: Comparison, base: str, resource: str, fmt: str) -> None:
    """`curl` of GET /v1/exports to a file against `psql -c COPY ... TO STDOUT` to a file."""
    url = f"{base}/v1/exports?resource={resource}&format={fmt}"
    bench.compare_export(
        comparison, resource, fmt, through=lambda sink: measure(["curl", "-sSf", "-o", str(sink), url], bench.env)
    )


def concurrent_uploads(bench: Bench, base: str, files: list[Path], at_once: int) -> dict[str, float | int]:
    """`at_once` uploads of the given files (cycled) sent together: the seconds until every
    one is answered, and how many were accepted (202). Each upload has an idempotency key of
    its own, so each is a job of its own."""
    stamp = time.time_ns()

    async def upload(client: httpx.AsyncClient, index: int) -> int:
        path = files[index % len(files)]
        response = await client.post(
            f"{base}/v1/imports",
            files={"file": (path.name, path.read_bytes(), "text/csv")},
            data={"resource": "users"},
            headers={"Idempotency-Key": f"bench-{stamp}-{index}"},
        )
        return response.status_code

    async def send_all() -> list[int]:
        limits = httpx.Limits(max_connections=at_once)
        async with httpx.AsyncClient(timeout=600, limits=limits) as client:
            return await asyncio.gather(*(upload(client, index) for index in range(at_once)))

    started = time.perf_counter()
    codes = asyncio.run(send_all())
    seconds = time.perf_counter() - started
    _delete_created_runs(bench)
    return {"uploads": at_once, "seconds": round(seconds, 3), "accepted": codes.count(202)}


def _delete_created_runs(bench: Bench) -> None:
    """The import runs the uploads created, which no runner takes here: deleted (with the
    Prefect client, which retries while the server's SQLite database is busy)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    waiting = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])))
    with SyncPrefectClient(bench.env["PREFECT_API_URL"]) as client:
        while runs := client.read_flow_runs(flow_run_filter=waiting, limit=200):
            for run in runs:
                client.delete_flow_run(run.id)
