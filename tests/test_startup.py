"""The collector during the command's start-up (`cli/startup.py`): paused while the modules
load, back on, with what they made frozen out of its passes, once a command has loaded them."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cli.startup import modules_loaded, pause_collector


@pytest.fixture
def collector() -> Iterator[None]:
    yield
    gc.enable()
    gc.unfreeze()


@pytest.mark.usefixtures("collector")
def test_a_paused_collector_is_back_on_with_the_loaded_objects_frozen() -> None:
    pause_collector()
    assert not gc.isenabled()
    modules_loaded()
    assert gc.isenabled() and gc.get_freeze_count() > 0


@pytest.mark.usefixtures("collector")
def test_where_the_collector_was_never_paused_nothing_is_frozen() -> None:
    gc.unfreeze()
    modules_loaded()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_the_bulkflow_command_runs_its_command_with_the_collector_paused() -> None:
    """Through the real entry point: `main` pauses the collector before any command runs."""
    probe = "import gc, cli.app; cli.app.app = lambda: print('paused' if not gc.isenabled() else 'on'); cli.app.main()"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "paused\n"), done.stderr


@pytest.mark.parametrize("given", [None, "0"], ids=["unset", "set-by-the-user"])
def test_the_bulkflow_command_keeps_prefects_usage_events_off_unless_told_otherwise(given: str | None) -> None:
    """Prefect's usage events would go over the internet: the command sets Prefect's own
    switch (DO_NOT_TRACK) before anything loads Prefect, and keeps a value the user gave."""
    probe = (
        "from prefect._internal.analytics.enabled import is_telemetry_enabled\n"
        "print(os.environ['DO_NOT_TRACK'], is_telemetry_enabled() if os.environ['DO_NOT_TRACK'] == '1' else '')"
    )
    assert _in_the_command(probe, "DO_NOT_TRACK", given) == ("1 False" if given is None else "0")


def test_the_bulkflow_command_has_polars_give_freed_memory_back() -> None:
    """Polars reads the allocator's settings from the environment when it loads, after its
    own (the last setting wins)."""
    probe = "import polars\nprint(','.join(os.environ['_RJEM_MALLOC_CONF'].split(',')[-2:]))"
    assert _in_the_command(probe, "_RJEM_MALLOC_CONF", None) == "dirty_decay_ms:100,muzzy_decay_ms:0"


@pytest.mark.parametrize("given", [None, "2"], ids=["unset", "set-by-the-user"])
def test_the_bulkflow_command_has_numpy_start_no_threads_of_its_own(given: str | None) -> None:
    """numpy's OpenBLAS starts a thread per core as it loads (at most as many as it is
    told, never more than the cores), unless told one: the command tells it, and keeps a
    value the user gave."""
    probe = (
        "threads = len(os.listdir('/proc/self/task'))\n"
        "import numpy\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')) - threads)"
    )
    users_threads = min(2, os.cpu_count() or 1) - 1  # the main thread is one of them
    assert _in_the_command(probe, "OPENBLAS_NUM_THREADS", given) == ("1 0" if given is None else f"2 {users_threads}")


def _in_the_command(probe: str, variable: str, given: str | None) -> str:
    """What `probe` prints when run as the command of `bulkflow`, through its entry point,
    with `variable` set to `given` (or unset)."""
    script = (
        "import os, cli.app\n"
        "def command():\n" + "".join(f"    {line}\n" for line in probe.splitlines()) + "cli.app.app = command\n"
        "cli.app.main()"
    )
    env = {k: v for k, v in os.environ.items() if k != variable} | ({variable: given} if given else {})
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
