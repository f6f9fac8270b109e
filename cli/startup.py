"""What the command sets before it loads anything: the garbage collector, and Prefect's
usage events.

Loading Prefect, pydantic, polars and pandera creates about a million long-lived objects and
next to no garbage, and each full pass of the collector walks all of them: about 0.2 s of a
1.3 s start (a 10-row import measured with and without). The `bulkflow` command pauses the
collector while it loads, then turns it back on with those objects frozen out of its passes
(`gc.freeze`), so a long import or a server pays nothing for them afterwards either.
Every command that runs long or over many rows (import, export, rejects, generate, serve,
watch, api, bench) calls `modules_loaded`; the short ones (db, history, profiles...) end
paused.
"""

from __future__ import annotations

import gc
import os


def pause_collector() -> None:
    """Called first by the `bulkflow` command, before any command loads its modules."""
    gc.disable()


def modules_loaded() -> None:
    """Called by a command once it has imported what it runs. Does nothing where the
    collector was not paused (the test suite calls the commands through typer's runner)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def no_usage_events() -> None:
    """Keep Prefect from sending usage events over the internet. From an interactive
    terminal, Prefect 3 reports a new installation's first import, flow and run to its
    analytics service; bulkflow runs where there is no internet and fetches nothing, so the
    command sets `DO_NOT_TRACK=1`, Prefect's own switch, unless the user set DO_NOT_TRACK
    (the runs and servers it starts inherit it)."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
