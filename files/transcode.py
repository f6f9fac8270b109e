"""Text in another encoding (or with escapes) made the UTF-8, quote-doubled text the
readers scan, block by block while staging; and a guess of a file's encoding when it is
not the UTF-8 it was said to be.
"""

from __future__ import annotations

import codecs
import re

from bulkflow.errors import InputError

_CP1252_UNDEFINED = frozenset(b"\x81\x8d\x8f\x90\x9d")


class Transcoder:
    """Blocks of a source in `encoding` to UTF-8. With an escape other than the quote,
    `<escape><quote>` becomes the doubled quote and `<escape><escape>` one escape (the
    readers know RFC 4180 quoting only); other escaped characters stay as written."""

    def __init__(self, encoding: str, source: str, quote: str = '"', escape: str | None = None) -> None:
        self.encoding, self.source, self.quote, self.escape = encoding, source, quote, escape
        self.decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        self.line = 1
        self.held = ""  # a block's last character when it is an escape whose escaped character is yet to come
        self.escapes = re.compile(re.escape(escape) + "(.)", re.DOTALL) if escape and escape != quote else None

    def __call__(self, block: bytes, final: bool = False) -> bytes:
        try:
            text = self.held + self.decoder.decode(block, final)
        except UnicodeDecodeError as exc:
            line = self.line + block[: max(exc.start, 0)].decode(self.encoding, errors="replace").count("\n")
            raise InputError(
                f"{self.source} is not valid {self.encoding} (line {line}): pass the file's --encoding",
                source=self.source,
                line=line,
            ) from None
        self.held = ""
        if self.escapes is not None:
            text = self._unescape(text, final)
        self.line += text.count("\n")
        return text.encode("utf-8")

    def flush(self) -> bytes:
        return self(b"", final=True)

    def _unescape(self, text: str, final: bool) -> str:
        assert self.escape is not None
        trailing = len(text) - len(text.rstrip(self.escape))
        if trailing % 2 and not final:
            text, self.held = text[:-1], self.escape
        return self.escapes.sub(self._replacement, text) if self.escapes is not None else text

    def _replacement(self, match: re.Match[str]) -> str:
        escaped = str(match.group(1))
        if escaped == self.quote:
            return self.quote * 2
        return escaped if escaped == self.escape else str(match.group(0))


def likely_encoding(head: bytes) -> str | None:
    """The encoding a file that is not UTF-8 most likely has, from its first bytes: UTF-16
    (a byte order mark, or every other byte NUL), else cp1252 (Windows' Western default,
    a superset of Latin-1's printable characters), else Latin-1."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[:4096]
    if len(sample) >= 4 and sample[1::2].count(0) > len(sample) // 4:
        return "utf-16-le"
    if len(sample) >= 4 and sample[0::2].count(0) > len(sample) // 4:
        return "utf-16-be"
    if any(byte >= 0x80 for byte in sample):
        return "latin-1" if _CP1252_UNDEFINED & set(sample) else "cp1252"
    return None
