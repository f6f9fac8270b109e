"""Running one measured command: wall time and peak resident memory from the OS."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_mb: float
    stdout: str


def measure(command: list[str], env: dict[str, str], stdout_to: Path | None = None) -> Measurement:
    """Run `command` to completion: its wall time, and the peak RSS the kernel reports for it
    (`wait4`, the figure `/usr/bin/time -v` prints). Raises with its stderr when it fails."""
    with tempfile.TemporaryFile() as err, (open(stdout_to, "wb") if stdout_to else tempfile.TemporaryFile()) as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)  # reaps the child ourselves, keeping its rusage
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {err.read().decode()[-3000:]}")
        text = ""
        if stdout_to is None:
            out.seek(0)
            text = out.read().decode()
    return Measurement(seconds, usage.ru_maxrss / 1024, text)  # ru_maxrss is in KiB on Linux
