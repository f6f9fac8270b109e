"""The keys a file has accepted so far, across chunk boundaries, in bounded memory."""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from decisions.spill import SpilledRun

PARTS = 16
"""Hashes are kept in this many parts by their top bits, so that merging the runs of one
part never copies more than a sixteenth of the keys at once."""


_PART_BITS = 4


_PART_STARTS = np.arange(PARTS, dtype=np.uint64) << np.uint64(64 - _PART_BITS)


MEMORY_BUDGET = 1 << 20
"""Hashes of one key kept in memory (8 MiB) before they go to a run on disk."""

_SPILL_PREFIX = "keys-"


@dataclass
class SeenKeys:
    """Keys of rows already accepted earlier in the same file, across chunk boundaries.

    Keys are kept as 64-bit hashes (8 bytes a key); the state is rebuilt from the file on
    every run, so hashes only need to agree within one process. A key's hashes are split
    by their top bits into PARTS parts, each a list of sorted runs merged like a binary
    counter (a run at most twice the size of the next absorbs it): at most log2(keys) runs
    a part, each more than twice the next. A chunk's lookup is a binary search in each run,
    its cost O(chunk x log(keys)) whatever the rows already read; each hash is merged
    O(log(keys)) times; and a merge copies at most one part's hashes.

    With a `spill_dir`, once a key holds more than `memory_budget` hashes in memory they
    are written out as one sorted run on disk (`decisions/spill.py`), which keeps about
    2 bytes a key in memory (its Bloom filter and sparse index): a 10M-row file's key
    state is tens of MB, not 160. The runs live in a directory of their own under
    `spill_dir`, removed with the SeenKeys (or by the next one, after a kill).
    """

    spill_dir: Path | None = None
    memory_budget: int = MEMORY_BUDGET
    runs: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)
    spilled: dict[str, list[SpilledRun]] = field(default_factory=dict)
    _own_dir: Path | None = None

    def seen_before(self, key: str, values: pl.Series) -> pl.Series:
        """True where a value's key was accepted in an earlier chunk."""
        present = values.is_not_null()
        parts, spilled = self.runs.get(key), self.spilled.get(key, [])
        if (parts is None and not spilled) or not present.any():
            return pl.Series(values.name, [False] * len(values), dtype=pl.Boolean)
        hashed = values.hash(seed=0).to_numpy()
        order = np.argsort(hashed)
        needles = hashed[order]  # sorted: each part's needles are one slice, each run's searches walk it in order
        found = np.zeros(len(needles), dtype=bool)
        bounds = np.searchsorted(needles, _PART_STARTS).tolist() + [len(needles)]
        for runs, start, stop in zip(parts or [], bounds, bounds[1:]):
            part = needles[start:stop]
            for run in runs:
                at = np.searchsorted(run, part).clip(max=len(run) - 1)
                found[start:stop] |= run[at] == part
        for on_disk in spilled:
            found |= on_disk.contains(needles)
        seen = np.empty_like(found)
        seen[order] = found
        return pl.Series(values.name, seen) & present

    def add(self, key: str, values: pl.Series) -> None:
        new = np.sort(values.drop_nulls().hash(seed=0).to_numpy())
        parts = self.runs.setdefault(key, [[] for _ in range(PARTS)])
        bounds = np.searchsorted(new, _PART_STARTS).tolist() + [len(new)]
        for runs, start, stop in zip(parts, bounds, bounds[1:]):
            if stop > start:
                _push(runs, new[start:stop].copy())
        in_memory = sum(len(run) for runs in parts for run in runs)
        if self.spill_dir is not None and in_memory > self.memory_budget:
            self._spill(key, parts)

    def _spill(self, key: str, parts: list[list[np.ndarray]]) -> None:
        """Write the key's hashes in memory as one sorted run on disk (the parts follow
        each other in hash order, so their merged runs back to back are sorted)."""
        merged = np.concatenate([np.sort(np.concatenate(runs)) for runs in parts if runs])
        on_disk = self.spilled.setdefault(key, [])
        on_disk.append(SpilledRun.write(merged, self._directory() / f"{key}-{len(on_disk)}.u64"))
        for runs in parts:
            runs.clear()

    def _directory(self) -> Path:
        if self._own_dir is None:
            assert self.spill_dir is not None
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            _remove_orphans(self.spill_dir)
            self._own_dir = Path(tempfile.mkdtemp(prefix=f"{_SPILL_PREFIX}{os.getpid()}-", dir=self.spill_dir))
            weakref.finalize(self, shutil.rmtree, self._own_dir, ignore_errors=True)
        return self._own_dir


def _remove_orphans(spill_dir: Path) -> None:
    """Remove the run directories of processes that are gone (killed before cleaning up)."""
    for directory in spill_dir.glob(f"{_SPILL_PREFIX}*-*"):
        pid = directory.name.removeprefix(_SPILL_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _push(runs: list[np.ndarray], run: np.ndarray) -> None:
    runs.append(run)
    while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
        last, before = runs.pop(), runs.pop()
        merged = np.concatenate([before, last])
        merged.sort(kind="stable")  # in place; two sorted runs back to back: timsort merges them in one pass
        runs.append(merged)
