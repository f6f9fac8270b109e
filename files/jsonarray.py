"""A top-level JSON array streamed to NDJSON, one element a line, in bounded memory."""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from typing import IO

from bulkflow.errors import InputError
from files.copying import Copied
from files.records import BLOCK_BYTES
from files.remote import check_size


def json_array_to_ndjson(src: IO[bytes], dst: IO[bytes], source: str, limit: int, max_record: int) -> Copied:
    """Stream a top-level JSON array into NDJSON, one element a line, in bounded memory.

    Numbers are kept as written (ids are text). An element nested too deeply for a parser,
    or longer than the maximum record size, is copied through as it is, on one line, for
    the reader to reject (malformed_record, record_too_large) without holding it."""
    text = _JsonText(src, source, limit)
    decoder = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=str)
    started = False
    while True:
        if not text.skip_separators():
            raise InputError(f"{source}: the JSON array is not closed (expected ']')")
        head = text.buffer[text.position]
        if not started:
            if head != "[":
                raise InputError(f"{source} is not a JSON array: it must start with '['")
            started, text.position = True, text.position + 1
            continue
        if head == "]":
            text.position += 1
            break
        _copy_element(text, decoder, dst, max_record)
    text.drain()
    return Copied(text.digest.hexdigest(), text.size)


def _copy_element(text: _JsonText, decoder: json.JSONDecoder, dst: IO[bytes], max_record: int) -> None:
    while True:
        try:
            value, end = decoder.raw_decode(text.buffer, text.position)
        except RecursionError:
            break
        except json.JSONDecodeError as exc:
            if len(text.buffer) - text.position > max_record and text.buffer[text.position] in '[{"':
                break
            if not text.more():
                raise InputError(f"{text.source}: an element of the JSON array is not valid JSON: {exc.msg}") from None
            continue
        dst.write(json.dumps(value, ensure_ascii=False).encode() + b"\n")
        text.position = end
        return
    _copy_raw_element(text, dst)


def _copy_raw_element(text: _JsonText, dst: IO[bytes]) -> None:
    """Copy one element as written (line breaks as spaces) up to its matching bracket."""
    element = _RawElement()
    while True:
        end = element.feed(text.buffer, text.position)
        stop = len(text.buffer) if end is None else end
        dst.write(text.buffer[text.position : stop].replace("\n", " ").replace("\r", " ").encode())
        text.position = stop
        if end is not None:
            dst.write(b"\n")
            return
        if not text.more():
            raise InputError(f"{text.source}: the JSON array is not closed (expected ']')")


class _JsonText:
    """The decoded text of a JSON file, pulled block by block, hashed and size-limited."""

    def __init__(self, src: IO[bytes], source: str, limit: int) -> None:
        self.reader = codecs.getreader("utf-8")(src)
        self.source, self.limit = source, limit
        self.digest = hashlib.sha256()
        self.buffer, self.position, self.size = "", 0, 0

    def more(self) -> bool:
        """Append the next block to the buffer (dropping what was consumed); False at the end."""
        try:
            chunk = self.reader.read(BLOCK_BYTES)
        except UnicodeDecodeError:
            raise InputError(f"{self.source} is not valid UTF-8: re-encode the file as UTF-8") from None
        if not chunk:
            return False
        encoded = chunk.encode()
        self.size += len(encoded)
        check_size(self.size, self.source, self.limit)
        self.digest.update(encoded)
        self.buffer, self.position = self.buffer[self.position :] + chunk, 0
        return True

    def skip_separators(self) -> bool:
        """Move past blanks and commas between elements; False when the text ends first."""
        while True:
            while self.position < len(self.buffer) and self.buffer[self.position] in " \t\r\n,\ufeff":
                self.position += 1
            if self.position < len(self.buffer):
                return True
            if not self.more():
                return False

    def drain(self) -> None:
        """Read what trails the array: blanks only (InputError for anything else, which is
        not part of a JSON document)."""
        while True:
            rest = self.buffer[self.position :]
            if rest.strip(" \t\r\n"):
                offset = len(rest) - len(rest.lstrip(" \t\r\n"))
                found = rest[offset : offset + 20]
                raise InputError(
                    f"{self.source}: the JSON array is followed by {found!r}: a JSON file holds one array, "
                    "and nothing after it but blanks"
                )
            self.position = len(self.buffer)
            if not self.more():
                return


_STRUCTURE = re.compile(r'["\[\]{}]')


_STRING_STOP = re.compile(r'["\\]')


class _RawElement:
    """Where a JSON value ends, found by counting brackets outside strings (no recursion,
    one step per bracket or string, whatever the depth)."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False

    def feed(self, text: str, position: int) -> int | None:
        """The index just after the value's end, or None when `text` ends first."""
        while position < len(text):
            if self.escaped:
                self.escaped, position = False, position + 1
                continue
            pattern = _STRING_STOP if self.in_string else _STRUCTURE
            match = pattern.search(text, position)
            if match is None:
                return None
            position, char = match.end(), match.group()
            if self.in_string:
                self.escaped = char == "\\"
                self.in_string = char != '"'
                if not self.in_string and self.depth == 0:
                    return position
            elif char == '"':
                self.in_string = True
            elif char in "[{":
                self.depth += 1
            else:
                self.depth -= 1
                if self.depth == 0:
                    return position
        return None
