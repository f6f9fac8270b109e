"""The keys a file has accepted so far, across chunk boundaries, in bounded memory."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

PARTS = 16
"""Hashes are kept in this many parts by their top bits, so that merging the runs of one
part never copies more than a sixteenth of the keys at once."""


_PART_BITS = 4


_PART_STARTS = np.arange(PARTS, dtype=np.uint64) << np.uint64(64 - _PART_BITS)


@dataclass
class SeenKeys:
    """Keys of rows already accepted earlier in the same file, across chunk boundaries.

    Keys are kept as 64-bit hashes (8 bytes a key); the state is rebuilt from the file on
    every run, so hashes only need to agree within one process. A key's hashes are split
    by their top bits into PARTS parts, each a list of sorted runs merged like a binary
    counter (a run at most twice the size of the next absorbs it): at most log2(keys) runs
    a part, each more than twice the next. A chunk's lookup is a binary search in each run,
    its cost O(chunk x log(keys)) whatever the rows already read; each hash is merged
    O(log(keys)) times; and a merge copies at most one part's hashes, so the state's peak
    stays close to its 8 bytes a key.
    """

    runs: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)

    def seen_before(self, key: str, values: pl.Series) -> pl.Series:
        """True where a value's key was accepted in an earlier chunk."""
        present = values.is_not_null()
        parts = self.runs.get(key)
        if parts is None or not present.any():
            return pl.Series(values.name, [False] * len(values), dtype=pl.Boolean)
        hashed = values.hash(seed=0).to_numpy()
        order = np.argsort(hashed)
        needles = hashed[order]  # sorted: each part's needles are one slice, each run's searches walk it in order
        found = np.zeros(len(needles), dtype=bool)
        bounds = np.searchsorted(needles, _PART_STARTS).tolist() + [len(needles)]
        for runs, start, stop in zip(parts, bounds, bounds[1:]):
            part = needles[start:stop]
            for run in runs:
                at = np.searchsorted(run, part).clip(max=len(run) - 1)
                found[start:stop] |= run[at] == part
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


def _push(runs: list[np.ndarray], run: np.ndarray) -> None:
    runs.append(run)
    while len(runs) > 1 and len(runs[-2]) <= 2 * len(runs[-1]):
        last, before = runs.pop(), runs.pop()
        merged = np.concatenate([before, last])
        merged.sort(kind="stable")  # in place; two sorted runs back to back: timsort merges them in one pass
        runs.append(merged)
