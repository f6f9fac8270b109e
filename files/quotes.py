"""Where a CSV file's quoting breaks: the RFC 4180 quote walk (in the file's dialect), run
only on a failing file."""

from __future__ import annotations

import codecs
from pathlib import Path

from files.records import BLOCK_BYTES


def find_quote_problem(path: Path, delimiter: str = ",", quote: str = '"') -> tuple[int, str]:
    """(line, what is wrong) for the first broken CSV quoting of a file whose quotes are odd
    in number. Only a failing file pays for this walk, which visits each quote once."""
    walk = _QuoteWalk(ord(delimiter), ord(quote))
    with open(path, "rb") as fh:
        first = True
        while block := fh.read(BLOCK_BYTES):
            start = 3 if first and block.startswith(codecs.BOM_UTF8) else 0
            first = False
            problem = walk.feed(block, start)
            if problem:
                return problem
    return walk.open_line, "a quoted field opens here and is never closed"


class _QuoteWalk:
    """RFC 4180 quoting, quote by quote: a field is quoted when it starts with a quote, and
    ends at a quote followed by the delimiter or a line end; a doubled quote inside is one."""

    def __init__(self, delimiter: int, quote: int) -> None:
        self.delimiter, self.quote = delimiter, quote
        self.field_ends = bytes([delimiter]) + b"\r\n"
        self.line, self.open_line = 1, 0
        self.inside = False
        self.after_quote = False  # inside, and the previous byte was a quote
        self.previous = ord("\n")

    def feed(self, block: bytes, start: int = 0) -> tuple[int, str] | None:
        position = start
        while position < len(block):
            if self.after_quote:
                self.after_quote = False
                if block[position] == self.quote:  # an escaped quote
                    self.previous, position = self.quote, position + 1
                    continue
                self.inside = False  # the previous quote closed the field
                if block[position] not in self.field_ends:
                    return self.line, "a quoted field goes on after its closing quote"
            quote = block.find(self.quote, position)
            stop = len(block) if quote < 0 else quote
            self.line += block.count(b"\n", position, stop)
            if stop > position:
                self.previous = block[stop - 1]
            if quote < 0:
                return None
            if self.inside:
                self.after_quote = True
            elif self.previous not in self.field_ends:
                return self.line, "a quote inside an unquoted field"
            else:
                self.inside, self.open_line = True, self.line
            self.previous, position = self.quote, quote + 1
        return None
