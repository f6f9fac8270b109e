"""Getting a source into a local, uncompressed, UTF-8 checked file the readers can scan.

Local plain files are used in place; compressed, remote (http(s)://, s3:// via fsspec) and
JSON-array files are streamed once into `BULKFLOW_HOME/staging`. The same pass computes
the content checksum that names the import job, so a re-run of the same content is
recognised whatever the file is called.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import json
import os
import re
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Any, Literal, Optional, get_args
from urllib.parse import urlsplit

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import WithJsonSchema

from bulkflow.errors import InputError, ParameterError, RetryableError, first_line
from bulkflow.settings import Settings
from tasks.records import Oversized, csv_fields, record_blocks, split_records
from tasks.remote import check_remote_url, check_size, is_http, is_remote, limited
from tasks.storage import open_file

Format = Literal["csv", "ndjson", "json", "parquet"]
FORMATS: tuple[str, ...] = get_args(Format)
OptionalFormat = Annotated[Optional[Format], WithJsonSchema({"enum": [*FORMATS, None]})]
"""A format, or none to tell it from the file's name. Its schema is one list of the formats
(not "a format or null"), so forms show a choice left empty by default: the Prefect UI's run
form, Swagger UI's upload form, the API's JSON body."""
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSIONS = {".gz": "gzip"}
_BLOCK = 1 << 20
_HTTP_TIMEOUTS = {"timeout": 30.0, "read": 300.0}


@dataclass(frozen=True)
class StagedSource:
    """A scannable local file. JSON arrays are staged as NDJSON (one element a line)."""

    source: str
    path: Path
    format: Format
    """How to read `path` (never "json": arrays are converted to NDJSON)."""
    declared_format: Format
    sha256: str
    size_bytes: int
    temporary: bool
    verbatim: bool = True
    """Whether `path` holds the source's bytes as they are (not decompressed, converted
    from a JSON array or given LF line ends)."""

    def cleanup(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


def display_name(source: str, given: str | None = None) -> str:
    """How a run names its file: `given` (an upload's original name), else the last part of
    the source's path or URL."""
    if given:
        return given
    path = urlsplit(source).path if is_remote(source) else source
    return PurePosixPath(path).name or source


def check_format(name: str) -> Format:
    """`name` as one of the formats we read and write; ParameterError naming them otherwise."""
    if name not in FORMATS:
        raise ParameterError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}")
    return name  # type: ignore[return-value]  # checked to be one of FORMATS just above


def detect_format(source: str, override: str | None = None) -> tuple[Format, str | None]:
    """(format, compression) from the name's extensions; `override` wins for the format."""
    suffixes = [s.lower() for s in Path(source.split("?")[0]).suffixes]
    compression = _COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes = suffixes[:-1]
    if override:
        return check_format(override), compression
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]], compression
    raise ParameterError(
        f"cannot tell the format of {source!r} from its name: pass --format "
        f"({', '.join(FORMATS)})"
    )


def check_source(source: str, format_override: str | None = None) -> tuple[Format, str | None, Path | None]:
    """Cheap checks before any work: (format, compression, local path or None if remote).
    A local path is checked first: a directory or a missing file is named as such, whatever
    its name says about a format."""
    local_path = None if is_remote(source) else Path(source.removeprefix("file://"))
    if local_path is not None:
        _check_local_file(source, local_path)
    fmt, compression = detect_format(source, format_override)
    return fmt, compression, local_path


def _check_local_file(source: str, path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{source} is a directory: give the path of a file")
    if not path.exists():
        raise InputError(f"file not found: {source}")
    if not path.is_file():
        raise InputError(f"{source} is not a regular file (a pipe or a device?): give the path of a file")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {source}: permission denied")


def stage_source(source: str, format_override: str | None = None, *, settings: Settings) -> StagedSource:
    """Make `source` a local, checked file; raise InputError saying what to fix.

    Checked before anything is written: at most BULKFLOW_MAX_SOURCE_BYTES of content (as
    decompressed), UTF-8 text, and for CSV balanced quotes. Old Mac line ends (CR alone)
    are read as line ends: such a file is staged as a copy with LF.
    """
    fmt, compression, local_path = check_source(source, format_override)
    in_place = local_path is not None and compression is None and fmt != "json" and not _cr_only(local_path, fmt)
    if in_place:
        assert local_path is not None
        try:
            with open(local_path, "rb") as fh:
                copied = checked_copy(
                    fh, None, text=fmt != "parquet", source=source, limit=settings.max_source_bytes, quotes=fmt == "csv"
                )
        except OSError as exc:
            raise InputError(f"cannot read {source}: {exc.strerror or exc}") from None
        staged = StagedSource(source, local_path, fmt, fmt, copied.sha256, copied.size, temporary=False)
    else:
        staged, copied = _stage_copy(source, fmt, compression, settings)
    try:
        if staged.size_bytes == 0:
            raise InputError(f"{source} is empty: nothing to import")
        if copied.quotes_odd:
            line, why = find_quote_problem(staged.path)
            raise InputError(
                f"{source} line {line}: {why}; fix the quoting (a quote inside a field is written \"\")",
                source=source,
                line=line,
            )
    except BaseException:
        staged.cleanup()
        raise
    return staged


def _cr_only(path: Path, fmt: Format) -> bool:
    """True for a text file whose lines end in CR alone (the first block has CR, no LF)."""
    if fmt == "parquet":
        return False
    with open(path, "rb") as fh:
        head = fh.read(_BLOCK)
    return b"\r" in head and b"\n" not in head


def _stage_copy(source: str, fmt: Format, compression: str | None, settings: Settings) -> tuple[StagedSource, Copied]:
    staging = Path(settings.home) / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    read_as: Format = "ndjson" if fmt == "json" else fmt
    fd, name = tempfile.mkstemp(dir=staging, suffix=f".{read_as}")
    try:
        with _open_source(source, compression, settings) as src, os.fdopen(fd, "wb") as dst:
            if fmt == "json":
                copied = _json_array_to_ndjson(src, dst, source, settings.max_source_bytes, settings.max_record_bytes)
            else:
                limit = settings.max_source_bytes
                copied = checked_copy(src, dst, text=fmt != "parquet", source=source, limit=limit, quotes=fmt == "csv")
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        Path(name).unlink(missing_ok=True)
        raise InputError(f"cannot read {source}: {first_line(exc)}") from None
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    verbatim = compression is None and fmt == read_as and not copied.rewritten
    staged = StagedSource(source, Path(name), read_as, fmt, copied.sha256, copied.size, temporary=True, verbatim=verbatim)
    return staged, copied


@contextmanager
def _open_source(source: str, compression: str | None, settings: Settings) -> Iterator[IO[bytes]]:
    """A binary stream of the source's (decompressed) content.

    http(s) goes through httpx (a Prefect dependency, streamed); other URLs through fsspec
    (`tasks.storage`: s3:// needs the `s3` extra)."""
    if is_remote(source):
        check_remote_url(source, settings)
    if not is_http(source):
        with open_file(settings, source, "rb", compression=compression) as stream:
            yield stream
        return
    import httpx  # here: only http sources need it, and importing it slows every start-up

    # Each redirect hop goes through the same URL policy as the first request.
    hooks = {"request": [lambda request: check_remote_url(str(request.url), settings)]}
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=httpx.Timeout(**_HTTP_TIMEOUTS), event_hooks=hooks) as client,
            client.stream("GET", source) as response,
        ):
            if response.status_code >= 400:
                raise InputError(f"cannot download {source}: HTTP {response.status_code}")
            raw = io.BufferedReader(_IteratorReader(limited(response.iter_bytes(), source, settings)), buffer_size=_BLOCK)
            yield gzip.GzipFile(fileobj=raw) if compression == "gzip" else raw  # type: ignore[misc]  # GzipFile and BufferedReader are both binary streams
    except httpx.TransportError as exc:
        raise RetryableError(f"cannot download {source}: {exc}") from exc


class _IteratorReader(io.RawIOBase):
    """A readable stream over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self.chunks = chunks
        self.pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]  # RawIOBase types it as a generic buffer
        while not self.pending:
            try:
                self.pending = next(self.chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self.pending))
        buffer[:size], self.pending = self.pending[:size], self.pending[size:]
        return size


@dataclass(frozen=True)
class Copied:
    """What a checked copy saw: the checksum and size of the content, and whether its
    double quotes are odd in number (a CSV quoted field left open)."""

    sha256: str
    size: int
    quotes_odd: bool = False
    rewritten: bool = False
    """Whether the copy's line ends were rewritten (CR alone to LF)."""


def checked_copy(
    src: IO[bytes], dst: IO[bytes] | None, *, text: bool, source: str, limit: int | None = None, quotes: bool = False
) -> Copied:
    """Stream `src` (to `dst` if given), hashing it; for text, checking it is UTF-8 (and,
    when copying, writing CR-only line ends as LF); with `limit`, failing past that many
    bytes; with `quotes`, counting double quotes."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")() if text else None
    size, line, odd = 0, 1, False
    newlines: _CrToLf | None = None
    while block := src.read(_BLOCK):
        if limit is not None:
            check_size(size + len(block), source, limit)
        digest.update(block)
        if text and size == 0 and block.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise InputError(f"{source} is UTF-16 (it starts with a UTF-16 byte order mark): re-encode the file as UTF-8")
        if text and dst is not None and size == 0 and b"\r" in block and b"\n" not in block:
            newlines = _CrToLf()
        if newlines is not None:
            block = newlines(block)
        if decoder is not None:
            _check_utf8(decoder, block, source, line, size)
            line += block.count(b"\n")
        odd ^= quotes and bool(block.count(b'"') & 1)
        if dst is not None:
            dst.write(block)
        size += len(block)
    if newlines is not None and dst is not None:
        dst.write(newlines.flush())
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{source} ends in the middle of a UTF-8 character") from None
    return Copied(digest.hexdigest(), size, odd, rewritten=newlines is not None)


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
        """Expand `block` at most `_BLOCK` bytes at a time, checking the total after each."""
        pending = block
        while pending:
            try:
                self.expanded += len(self.inflate.decompress(pending, _BLOCK))
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


def _check_utf8(decoder: codecs.IncrementalDecoder, block: bytes, source: str, line: int, offset: int) -> None:
    try:
        decoder.decode(block)
    except UnicodeDecodeError as exc:
        bad_line = line + block[: exc.start].count(b"\n")
        raise InputError(
            f"{source} is not valid UTF-8 (line {bad_line}, byte {offset + exc.start}): re-encode the file as UTF-8",
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


def find_quote_problem(path: Path) -> tuple[int, str]:
    """(line, what is wrong) for the first broken CSV quoting of a file whose quotes are odd
    in number. Only a failing file pays for this walk, which visits each quote once."""
    walk = _QuoteWalk()
    with open(path, "rb") as fh:
        first = True
        while block := fh.read(_BLOCK):
            start = 3 if first and block.startswith(codecs.BOM_UTF8) else 0
            first = False
            problem = walk.feed(block, start)
            if problem:
                return problem
    return walk.open_line, "a quoted field opens here and is never closed"


class _QuoteWalk:
    """RFC 4180 quoting, quote by quote: a field is quoted when it starts with a quote, and
    ends at a quote followed by a comma or a line end; `""` inside is one quote."""

    def __init__(self) -> None:
        self.line, self.open_line = 1, 0
        self.inside = False
        self.after_quote = False  # inside, and the previous byte was a quote
        self.previous = ord("\n")

    def feed(self, block: bytes, start: int = 0) -> tuple[int, str] | None:
        position = start
        while position < len(block):
            if self.after_quote:
                self.after_quote = False
                if block[position] == ord('"'):  # an escaped quote
                    self.previous, position = ord('"'), position + 1
                    continue
                self.inside = False  # the previous quote closed the field
                if block[position] not in b",\r\n":
                    return self.line, "a quoted field goes on after its closing quote"
            quote = block.find(b'"', position)
            stop = len(block) if quote < 0 else quote
            self.line += block.count(b"\n", position, stop)
            if stop > position:
                self.previous = block[stop - 1]
            if quote < 0:
                return None
            if self.inside:
                self.after_quote = True
            elif self.previous not in b",\r\n":
                return self.line, "a quote inside an unquoted field"
            else:
                self.inside, self.open_line = True, self.line
            self.previous, position = ord('"'), quote + 1
        return None


def _json_array_to_ndjson(src: IO[bytes], dst: IO[bytes], source: str, limit: int, max_record: int) -> Copied:
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
            chunk = self.reader.read(_BLOCK)
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
        """Hash whatever trails the array too, so the checksum covers the whole file."""
        while self.more():
            self.position = len(self.buffer)


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


def read_columns(staged: StagedSource, max_record: int) -> list[str]:
    """The columns a file declares: CSV header, Parquet schema, keys of the first NDJSON
    lines. A Parquet file is decoded through once here, so a corrupt one is refused before
    anything is written."""
    try:
        if staged.format == "csv":
            return csv_header(staged, max_record)[0]
        if staged.format == "parquet":
            return _parquet_columns(staged)
        return _ndjson_keys(staged.path, sample_lines=1000, max_record=max_record)
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as exc:
        raise InputError(f"cannot read {staged.source} as {staged.declared_format}: {first_line(exc)}") from exc


def csv_header(staged: StagedSource, max_record: int) -> tuple[list[str], bytes]:
    """The header's column names, and the header record as written (its line end included)."""
    with open(staged.path, "rb") as stream:
        first = next(record_blocks(stream, staged.size_bytes, quoted=True, max_record=max_record), None)
    if isinstance(first, Oversized):
        raise InputError(
            f"{staged.source}: the header (line 1) is over {max_record:,} bytes (BULKFLOW_MAX_RECORD_BYTES): "
            "is this really a CSV file with a header?"
        )
    if first is None:
        raise InputError(f"{staged.source} is empty: nothing to import")
    _, record = next(split_records(first.data, 1))
    text = record.decode("utf-8").lstrip("\ufeff").removesuffix("\n").removesuffix("\r")
    try:
        names = csv_fields(text)
    except csv.Error as exc:
        raise InputError(f"{staged.source}: the header (line 1) is not valid CSV: {exc}") from None
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"{staged.source}: the header names {', '.join(map(repr, repeated))} more than once")
    return names, record


def _parquet_columns(staged: StagedSource) -> list[str]:
    parquet = pq.ParquetFile(staged.path)
    schema = parquet.schema_arrow
    for name in schema.names:
        kind = schema.field(name).type
        if pa.types.is_struct(kind) or pa.types.is_map(kind):
            raise InputError(f"{staged.source}: column {name} holds structs; bulkflow reads text, numbers, booleans, timestamps and lists")
    for _ in parquet.iter_batches(batch_size=65_536):
        pass
    return list(schema.names)


def _ndjson_keys(path: Path, sample_lines: int, max_record: int) -> list[str]:
    """Union of the keys of the first lines that are JSON objects (malformed ones skipped)."""
    keys: dict[str, None] = {}
    with open(path, encoding="utf-8-sig") as fh:
        for _ in range(sample_lines):
            line = fh.readline(max_record + 1)
            if not line:
                break
            if len(line) > max_record:  # the reader rejects it; skip the rest, never holding it
                while line and not line.endswith("\n"):
                    line = fh.readline(max_record)
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(record, dict):
                keys.update(dict.fromkeys(record))
    return list(keys)
