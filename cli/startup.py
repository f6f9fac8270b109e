"""What the command sets before it loads anything: the garbage collector, and its
environment's defaults.

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


ENVIRONMENT_DEFAULTS = {
    # Prefect's own switch for its usage events: from an interactive terminal, Prefect 3
    # reports a new installation's first import, flow and run to its analytics service
    # over the internet, and bulkflow runs where there is none.
    "DO_NOT_TRACK": "1",
    # Polars' allocator (jemalloc), as polars sets it up, keeps freed pages in the process
    # for up to 1.5 s (dirty_decay_ms:500, then muzzy_decay_ms:1000; polars appends ours).
    # Given back once they leave the dirty state, an import's peak is 3-6% lower (more at
    # 1M rows than at 100k: chunk after chunk reuses less) for the same CPU; dirty for
    # 0.1 s at most, 1M users peak 10 MB lower again (350 against 360 MB, 100k unchanged),
    # still for the same CPU. At 0 every free gives its pages back at once: both peaks 25 MB
    # lower, but 1M rows take 0.6 CPU-s more system time (its pages faulted in again and
    # again) and 0.25 s longer.
    "_RJEM_MALLOC_CONF": "dirty_decay_ms:100,muzzy_decay_ms:0",
    # numpy's OpenBLAS starts a thread per core as numpy loads, and those threads spin while
    # they wait; bulkflow asks numpy for sorts and searches only, never linear algebra. One
    # thread (none of its own) saves 0.1 CPU-s of each command and a core's share of them.
    "OPENBLAS_NUM_THREADS": "1",
}
"""What the command sets in its environment before it loads anything, unless the user set
it: the runs, servers and workers it starts inherit it."""


def environment_defaults() -> None:
    """Set ENVIRONMENT_DEFAULTS; called as the `cli` package is imported, before Prefect or
    polars load (both read them then)."""
    for name, value in ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
