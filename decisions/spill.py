"""Sorted runs of key hashes kept on disk, so that a file's key state does not grow in memory.

A run on disk keeps in memory only a Bloom filter (BITS_PER_KEY bits a hash) and a sparse
index (every BLOCK-th hash): a lookup answers "not there" from the filter for almost every
new key, and reads one block of the file for each block holding a possible match.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BLOCK = 1024
"""Hashes read at once to confirm a possible match (8 KiB)."""

BITS_PER_KEY = 16
PROBES = 6
"""Bits set a hash, all in one 64-bit word of the filter: about 0.4% false positives at
16 bits a key (a blocked filter: one memory access a lookup)."""

_HASH_BYTES = 8
_BUILD_SLICE = 1 << 16
"""Hashes a filter is built from at once."""


def _remixed(hashes: np.ndarray) -> np.ndarray:
    """A second hash of each hash (splitmix64's finalizer), for the bits within a word:
    the word itself is picked by the hash's top bits."""
    mixed = hashes ^ (hashes >> np.uint64(31))
    mixed *= np.uint64(0x7FB5D329728EA185)
    mixed ^= mixed >> np.uint64(27)
    mixed *= np.uint64(0x81DADEF4BC2DD44D)
    return mixed ^ (mixed >> np.uint64(33))


def _masks(hashes: np.ndarray) -> np.ndarray:
    mixed = _remixed(hashes)
    masks = np.zeros(len(hashes), dtype=np.uint64)
    for probe in range(PROBES):
        masks |= np.uint64(1) << ((mixed >> np.uint64(6 * probe)) & np.uint64(63))
    return masks


@dataclass(frozen=True)
class BloomFilter:
    """A blocked Bloom filter of 64-bit hashes: no false negatives."""

    words: np.ndarray

    @classmethod
    def of(cls, hashes: np.ndarray) -> BloomFilter:
        """The filter of `hashes` (sorted, so that each word's hashes follow each other),
        built a slice at a time: its temporary arrays stay a few MB whatever the run (whole,
        a run of 1M hashes took 43 MB at its peak, for a 2 MB filter)."""
        words = np.zeros(max(1, -(-len(hashes) * BITS_PER_KEY // 64)), dtype=np.uint64)
        for start in range(0, len(hashes), _BUILD_SLICE):
            part = hashes[start : start + _BUILD_SLICE]
            at = _word_of(part, len(words))
            firsts = np.flatnonzero(np.r_[True, at[1:] != at[:-1]])
            # a word may also hold hashes of the slice before: or, not assign
            words[at[firsts]] |= np.bitwise_or.reduceat(_masks(part), firsts)
        return cls(words)

    def may_contain(self, hashes: np.ndarray) -> np.ndarray:
        masks = _masks(hashes)
        return (self.words[_word_of(hashes, len(self.words))] & masks) == masks


def _word_of(hashes: np.ndarray, words: int) -> np.ndarray:
    """A hash's word among `words`, from its top 32 bits (multiply and shift: any number
    of words, so a filter is sized to its run, not to a power of two)."""
    return ((hashes >> np.uint64(32)) * np.uint64(words)) >> np.uint64(32)


@dataclass(frozen=True)
class SpilledRun:
    """Sorted distinct hashes in a file, with what finds them there in memory."""

    path: Path
    index: np.ndarray
    """The first hash of each block."""
    bloom: BloomFilter

    @classmethod
    def write(cls, hashes: np.ndarray, path: Path) -> SpilledRun:
        """Write `hashes` (sorted uint64) to `path`."""
        hashes.tofile(path)
        return cls(path, hashes[::BLOCK].copy(), BloomFilter.of(hashes))

    def contains(self, needles: np.ndarray) -> np.ndarray:
        """True where a needle (sorted uint64) is in the run."""
        found = np.zeros(len(needles), dtype=bool)
        maybe = np.flatnonzero(self.bloom.may_contain(needles))
        if not len(maybe):
            return found
        candidates = needles[maybe]
        blocks = np.searchsorted(self.index, candidates, side="right") - 1
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]]).tolist()
        with open(self.path, "rb") as file:
            for start, stop in zip(starts, starts[1:] + [len(blocks)]):
                block = int(blocks[start])
                if block < 0:  # below the run's first hash
                    continue
                read = os.pread(file.fileno(), BLOCK * _HASH_BYTES, block * BLOCK * _HASH_BYTES)
                hashes = np.frombuffer(read, dtype=np.uint64)
                part = candidates[start:stop]
                at = np.searchsorted(hashes, part).clip(max=len(hashes) - 1)
                found[maybe[start:stop]] = hashes[at] == part
        return found
