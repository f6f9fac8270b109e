"""The collector during the command's start-up (`cli/startup.py`): paused while the modules
load, back on, with what they made frozen out of its passes, once a command has loaded them."""

from __future__ import annotations

import gc
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
