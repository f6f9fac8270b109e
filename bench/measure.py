"""Running one measured command: wall time and peak resident memory from the OS; and
running both sides of a comparison, alternately.

The command is started by a small helper process (`python -m bench.measure`), not by the
benchmark itself: on Linux a child's peak RSS starts from the high-water mark of the
address space it was forked from, so a command forked straight from the benchmark (which
holds generated data) would report the benchmark's memory, not its own. `/usr/bin/time -v`
avoids it the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.comparison import Comparison


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_mb: float
    stdout: str


def measure(command: list[str], env: dict[str, str], stdout_to: Path | None = None) -> Measurement:
    """Run `command` to completion: wall time and peak RSS. Raises with its stderr when it fails."""
    with (
        tempfile.NamedTemporaryFile("r", suffix=".json") as figures,
        tempfile.TemporaryFile() as err,
        open(stdout_to, "wb") if stdout_to else tempfile.TemporaryFile() as out,  # noqa: SIM115
    ):
        helper = [sys.executable, "-m", "bench.measure", figures.name, *command]
        returncode = subprocess.run(helper, env=env, stdout=out, stderr=err, check=False).returncode
        if returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed ({returncode}): {err.read().decode()[-3000:]}")
        result = json.load(figures)
        text = ""
        if stdout_to is None:
            out.seek(0)
            text = out.read().decode()
    return Measurement(result["seconds"], result["maxrss_kb"] / 1024, text)


def alternate(
    repeats: int, comparison: Comparison, reference: Callable[[], float], ours: Callable[[int], float]
) -> None:
    """`repeats` runs of each side, their seconds added to `comparison`, alternating which
    goes first; `ours(repeat)` may make each repeat its own (an idempotency key, say)."""
    for repeat in range(repeats):
        for side in ("reference", "ours") if repeat % 2 == 0 else ("ours", "reference"):
            if side == "reference":
                comparison.copy_s.append(reference())
            else:
                comparison.ours_s.append(ours(repeat))
        print(
            f"  {comparison.kind} {comparison.workload}: {comparison.reference} {comparison.copy_s[-1]:.2f}s, "
            f"bulkflow {comparison.ours_s[-1]:.2f}s",
            flush=True,
        )


def _run_and_report(figures: str, command: list[str]) -> int:
    started = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    with open(figures, "w") as fh:
        json.dump({"seconds": seconds, "maxrss_kb": usage.ru_maxrss}, fh)  # KiB on Linux
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(_run_and_report(sys.argv[1], sys.argv[2:]))
