"""A stream copied once and checked on the way: checksum (of the bytes as they come), size
(as decompressed), UTF-8 (or decoded to it), CR-only line ends made LF, CSV quotes counted.
Nothing is kept in memory but a block.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import zlib
from dataclasses import dataclass
from typing import IO, Any

from bulkflow.errors import InputError
from files.records import BLOCK_BYTES, NEWLINE, occurrences, odd_quotes
from files.remote import check_size
from files.transcode import Transcoder, likely_encoding


@dataclass(frozen=True)
class Copied:
    """What a checked copy saw: the checksum and size of the content, and whether its
    double quotes are odd in number (a CSV quoted field left open)."""

    sha256: str
    size: int
    quotes_odd: bool = False
    rewritten: bool = False
    """Whether the copy's bytes differ from the source's (decoded, escapes or CR-only line
    ends rewritten)."""


def checked_copy(
    src: IO[bytes],
    dst: IO[bytes] | None,
    *,
    text: bool,
    source: str,
    limit: int | None = None,
    quote: bytes | None = None,
    transcoder: Transcoder | None = None,
) -> Copied:
    """Stream `src` (to `dst` if given), hashing it; for text, checking it is UTF-8 or
    decoding it with `transcoder` (and, when copying, writing CR-only line ends as LF); with
    `limit`, failing past that many bytes; with `quote`, counting quotes (of the text as
    copied). `Copied.size` is that of the copy."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")() if text and transcoder is None else None
    read, size, line, odd = 0, 0, 1, False
    newlines: _CrToLf | None = None
    while block := src.read(BLOCK_BYTES):
        if limit is not None:
            check_size(read + len(block), source, limit)
        digest.update(block)
        first, read = read == 0, read + len(block)
        if transcoder is not None:
            block = transcoder(block)
        elif decoder is not None:
            _check_utf8(decoder, block, source, line, read - len(block), first)
            line += occurrences(block, NEWLINE)
        if text and dst is not None and first and b"\r" in block and b"\n" not in block:
            newlines = _CrToLf()
        if newlines is not None:
            block = newlines(block)
        odd ^= odd_quotes(block, quote)
        if dst is not None:
            dst.write(block)
        size += len(block)
    tail = (transcoder.flush() if transcoder is not None else b"") + (newlines.flush() if newlines else b"")
    if tail and dst is not None:
        dst.write(tail)
        size += len(tail)
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{source} ends in the middle of a UTF-8 character") from None
    return Copied(digest.hexdigest(), size, odd, rewritten=newlines is not None or transcoder is not None)


class ExpandedSizeLimit(io.RawIOBase):
    """A gzip stream read as it is, while counting what it expands to: TooLargeError once
    that passes `limit` (BULKFLOW_MAX_SOURCE_BYTES counts content, not compressed bytes),
    InputError when it is not gzip at all. What it expands to is counted, never kept."""

    def __init__(self, raw: IO[bytes], source: str, limit: int) -> None:
        super().__init__()
        self.raw, self.source, self.limit = raw, source, limit
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.expanded = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        block = self.raw.read(len(buffer))
        if block:
            self._count(block)
            buffer[: len(block)] = block
        return len(block)

    def _count(self, block: bytes) -> None:
        """Expand `block` at most `BLOCK_BYTES` bytes at a time, checking the total after each."""
        pending = block
        while pending:
            try:
                self.expanded += len(self.inflate.decompress(pending, BLOCK_BYTES))
            except zlib.error:
                raise InputError(f"{self.source} is not valid gzip: send it uncompressed or gzip it again") from None
            check_size(self.expanded, self.source, self.limit)
            if not self.inflate.eof:
                pending = self.inflate.unconsumed_tail
                continue
            # A member ended (its tail stays in unconsumed_tail too, so that is no test of
            # what is left): what follows is the next member, after any zero padding, as
            # the gzip module reads it.
            pending = self.inflate.unused_data.lstrip(b"\0")
            if pending:
                self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)


def _check_utf8(
    decoder: codecs.IncrementalDecoder, block: bytes, source: str, line: int, offset: int, first: bool
) -> None:
    if first and block.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise InputError(f"{source} is UTF-16 (it starts with a UTF-16 byte order mark): pass --encoding utf-16")
    if block.isascii() and not decoder.getstate()[0]:
        return  # ASCII is UTF-8, and no character is left open from the block before: ten times cheaper than decoding
    try:
        decoder.decode(block)
    except UnicodeDecodeError as exc:
        bad_line = line + block[: exc.start].count(NEWLINE)
        guess = likely_encoding(block)
        fix = f"looks like {guess}: pass --encoding {guess}" if guess else "pass the file's --encoding"
        raise InputError(
            f"{source} is not valid UTF-8 (line {bad_line}, byte {offset + exc.start}): {fix}",
            source=source,
            line=bad_line,
        ) from None


class _CrToLf:
    """Line ends of CR alone (and any CRLF) as LF, block by block."""

    def __init__(self) -> None:
        self.pending_cr = False

    def __call__(self, block: bytes) -> bytes:
        if self.pending_cr:
            block = b"\r" + block
        self.pending_cr = block.endswith(b"\r")
        if self.pending_cr:
            block = block[:-1]
        return block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")

    def flush(self) -> bytes:
        return b"\n" if self.pending_cr else b""
