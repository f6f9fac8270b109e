"""Cutting a text file into whole records, in bounded memory and linear time.

A record ends at a newline; in CSV only at a newline outside quotes (a quote toggles the
quoted state, an escaped `""` toggles twice). The quote is the dialect's (`"` by default);
`quote=None` reads lines (NDJSON). Each byte is looked at a bounded number of
times, so a stray quote costs what any other byte costs. A record longer than the maximum
record size is skipped without being held: the reader reports it (`record_too_large`)
with its line and the first bytes, and goes on with the next record.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

BLOCK_BYTES = 1 << 20
"""Small blocks keep the parser's working set small; throughput is the same as with 8 MB."""
EXCERPT_BYTES = 200
QUOTE, NEWLINE = b'"', b"\n"


def odd_quotes(data: bytes | bytearray, quote: bytes | None) -> bool:
    """Whether `data` holds an odd number of quotes (never, when nothing quotes). A block
    without a quote is told by one search (memchr) instead of a count of every byte."""
    return quote is not None and quote in data and bool(occurrences(data, quote) & 1)


def occurrences(data: bytes | bytearray, pattern: bytes) -> int:
    """How often `pattern` occurs in `data`. One byte is counted by numpy's vectorised compare,
    in about a third of the time `bytes.count` takes; a longer pattern by `bytes.count`."""
    if len(pattern) == 1:
        return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == pattern[0]))
    return data.count(pattern)


class Readable(Protocol):
    """A binary stream: a file, an fsspec file, or a window on one."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Block:
    """Whole records; `first_line` is the physical line the first one starts on."""

    data: bytes
    first_line: int
    progress: float


@dataclass(frozen=True)
class Oversized:
    """A record longer than the limit, skipped: where it starts and how it begins."""

    line: int
    size: int
    head: bytes
    progress: float


def record_blocks(
    stream: Readable, size_bytes: int, *, quote: bytes | None, max_record: int, first_line: int = 1
) -> Iterator[Block | Oversized]:
    """The records of `stream` (a file, or a span of one that starts at a record on
    `first_line`), as blocks of whole records and the oversized records between."""
    total = max(size_bytes, 1)
    done = 0
    carry = bytearray()
    carry_odd = False  # quote parity of `carry`
    line = first_line  # physical line on which `carry` starts
    skipping: _Skip | None = None
    while data := stream.read(min(BLOCK_BYTES, max_record)):
        done += len(data)
        progress = min(done / total, 1.0)
        if skipping is not None:
            end = first_record_end(data, skipping.odd, quote)
            if end < 0:
                skipping.consume(data, quote)
                continue
            skipping.consume(data[: end + 1], quote)
            yield skipping.report(progress)
            line = skipping.line + skipping.lines
            skipping, data = None, data[end + 1 :]
        if carry:
            end = first_record_end(data, carry_odd, quote)
            if end >= 0 and len(carry) + end + 1 > max_record:
                oversized = _Skip.of(carry, line, carry_odd)
                oversized.consume(data[: end + 1], quote)
                yield oversized.report(progress)
                line += oversized.lines
                carry.clear()
                carry_odd, data = False, data[end + 1 :]
        cut = last_record_end(data, carry_odd, quote)
        if cut < 0:
            carry += data
            carry_odd ^= odd_quotes(data, quote)
            if len(carry) > max_record:
                skipping = _Skip.of(carry, line, carry_odd)
                carry.clear()
                carry_odd = False
            continue
        block = bytes(carry) + data[: cut + 1]
        yield Block(block, line, progress)
        line += occurrences(block, NEWLINE)
        carry = bytearray(data[cut + 1 :])
        carry_odd = odd_quotes(carry, quote)
    if skipping is not None:
        yield skipping.report(1.0)
    elif carry.strip():
        yield Block(bytes(carry), line, 1.0)


class _Skip:
    """An oversized record being skipped: its start, its head, what has gone by so far."""

    def __init__(self, line: int, head: bytes, size: int, odd: bool, lines: int) -> None:
        self.line, self.head, self.size, self.odd, self.lines = line, head, size, odd, lines

    @classmethod
    def of(cls, carry: bytearray, line: int, odd: bool) -> _Skip:
        return cls(line, bytes(carry[:EXCERPT_BYTES]), len(carry), odd, occurrences(carry, NEWLINE))

    def consume(self, data: bytes, quote: bytes | None) -> None:
        self.size += len(data)
        self.odd ^= odd_quotes(data, quote)
        self.lines += occurrences(data, NEWLINE)

    def report(self, progress: float) -> Oversized:
        return Oversized(self.line, self.size, self.head, progress)


def last_record_end(data: bytes, start_odd: bool, quote: bytes | None) -> int:
    """Index of the last newline of `data` that ends a record, or -1. Linear: each byte is
    counted once, walking back from the end."""
    end = data.rfind(NEWLINE)
    if quote is None:
        return end
    odd = start_odd ^ odd_quotes(data, quote)  # parity at the end of data
    upper = len(data)
    while end >= 0:
        odd ^= bool(data.count(quote, end, upper) & 1)  # parity just before `end`
        if not odd:
            return end
        upper = end
        end = data.rfind(NEWLINE, 0, end)
    return -1


def first_record_end(data: bytes, start_odd: bool, quote: bytes | None, start: int = 0) -> int:
    """Index of the first newline of `data[start:]` that ends a record, or -1 (linear)."""
    end = data.find(NEWLINE, start)
    if quote is None:
        return end
    odd, lower = start_odd, start
    while end >= 0:
        odd ^= bool(data.count(quote, lower, end) & 1)
        if not odd:
            return end
        lower = end
        end = data.find(NEWLINE, end + 1)
    return -1


def csv_record_starts(data: bytes, quote: bytes = QUOTE) -> np.ndarray:
    """Offsets in `data` (whole CSV records, starting outside quotes) of the records that
    are not blank: what makes a row, counted the way `split_records` cuts (a newline ends a
    record outside quotes) at C speed."""
    if not data:
        return np.empty(0, dtype=np.int64)
    octets = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(octets == NEWLINE[0])
    quotes = np.flatnonzero(octets == quote[0])
    if quotes.size:  # a newline ends a record when an even number of quotes comes before it
        ends = ends[(np.searchsorted(quotes, ends) & 1) == 0]
    if ends.size == 0 or ends[-1] != len(octets) - 1:
        ends = np.append(ends, len(octets) - 1)  # the file's last record, without its line end
    starts = np.concatenate(([0], ends[:-1] + 1))
    text_length = ends - starts + 1 - (octets[ends] == NEWLINE[0])
    blank = (text_length == 0) | ((text_length == 1) & (octets[starts] == ord("\r")))
    return starts[~blank]


def split_records(block: bytes, first_line: int, quote: bytes = QUOTE) -> Iterator[tuple[int, bytes]]:
    """(line, record) for each record of a block of whole CSV records (newline included)."""
    start, line = 0, first_line
    while start < len(block):
        end = first_record_end(block, False, quote, start)
        stop = len(block) if end < 0 else end + 1
        record = block[start:stop]
        yield line, record
        line += record.count(NEWLINE)
        start = stop


def csv_fields(text: str, delimiter: str = ",", quote: str = '"') -> list[str]:
    """One CSV record (no line end) as its fields, strictly (RFC 4180 quoting, in the given
    dialect); csv.Error when its quoting is broken. Records are already bounded by the
    maximum record size, so the csv module's own field limit (128 KiB) must not refuse a
    long but valid field."""
    csv.field_size_limit(_NO_FIELD_LIMIT)
    return next(csv.reader([text], strict=True, delimiter=delimiter, quotechar=quote))


_NO_FIELD_LIMIT = 2**31 - 1
