"""The Bloom filter of a run spilled to disk: exact for the run's hashes, about as selective
as its bits a key promise, and built in bounded memory whatever the run's size."""

from __future__ import annotations

import tracemalloc

import numpy as np

from decisions.spill import _BUILD_SLICE, BloomFilter


def _sorted_hashes(count: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).integers(0, np.iinfo(np.uint64).max, count, dtype=np.uint64))


def test_a_filter_built_over_many_slices_holds_every_hash_and_few_others() -> None:
    run = _sorted_hashes(16 * _BUILD_SLICE + 7, seed=1)  # words shared by slices that meet
    bloom = BloomFilter.of(run)
    assert bloom.may_contain(run).all()
    strangers = np.setdiff1d(_sorted_hashes(200_000, seed=2), run)
    assert bloom.may_contain(strangers).mean() < 0.01  # 16 bits a key: about 0.4%


def test_a_filter_is_built_without_copies_of_its_run() -> None:
    run = _sorted_hashes(1 << 20, seed=3)  # 8 MB of hashes, a 2 MB filter
    tracemalloc.start()
    try:
        bloom = BloomFilter.of(run)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert bloom.words.nbytes == 2 << 20
    assert peak < run.nbytes  # less than one copy of the run: built whole, it took 43 MB
