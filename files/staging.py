"""Getting a source into a local, uncompressed, UTF-8 checked file the readers can scan.

Local plain UTF-8 files are used in place; compressed, remote (http(s)://, s3:// via
fsspec), JSON-array files and text in another encoding (or with backslash-style escapes)
are streamed once into `BULKFLOW_HOME/staging`, decoded to UTF-8 on the way. The same pass
computes the checksum of the bytes as they came, which names the import job, so a re-run
of the same content is recognised whatever the file is called. A CSV file's dialect is
resolved here too (`files/dialect.py`), and its quoting checked in that dialect.
"""

from __future__ import annotations

import gzip
import io
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from bulkflow.errors import InputError, ParameterError, RetryableError, first_line
from bulkflow.settings import Settings
from files.copying import Copied, checked_copy
from files.dialect import CsvDialect, resolve_dialect
from files.formats import check_source, named_tsv
from files.header import ColumnMatch
from files.jsonarray import json_array_to_ndjson
from files.quotes import find_quote_problem
from files.records import BLOCK_BYTES
from files.remote import check_remote_url, is_http, is_remote, limited
from files.storage import open_file
from files.transcode import Transcoder
from schemas.parameters import Format, ReadOptions
from schemas.resource import ValueFormats

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
    """Whether `path` holds the source's bytes as they are (not decompressed, decoded,
    converted from a JSON array or given LF line ends)."""
    encoding: str = "utf-8"
    """The encoding the source was read in (`path` always holds UTF-8)."""
    dialect: CsvDialect = CsvDialect()
    """How a CSV file's records are written."""
    columns: ColumnMatch = ColumnMatch()
    """Which field each of the file's columns feeds (set once its columns are read)."""
    values: ValueFormats = ValueFormats()
    """How the file writes no value, booleans and timestamps."""

    def cleanup(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


def stage_source(
    source: str,
    format_override: str | None = None,
    *,
    settings: Settings,
    reading: ReadOptions = ReadOptions(),
    fits_header: Callable[[list[str]], bool] = lambda header: True,
) -> StagedSource:
    """Make `source` a local, checked file; raise InputError saying what to fix.

    Checked before anything is written: at most BULKFLOW_MAX_SOURCE_BYTES of content (as
    decompressed), text in its encoding (strict UTF-8 by default), and for CSV balanced
    quotes. Old Mac line ends (CR alone) are read as line ends: such a file is staged as a
    copy with LF. `fits_header` tells a sniffed delimiter (`reading.delimiter == "auto"`)
    whether a header it split names the resource's columns.
    """
    fmt, compression, local_path = check_source(source, format_override)
    transcoder = _transcoder(source, fmt, reading)
    in_place = (
        local_path is not None
        and compression is None
        and fmt != "json"
        and transcoder is None
        and not _cr_only(local_path, fmt)
    )
    quote = reading.quote.encode() if fmt == "csv" else None
    if in_place:
        assert local_path is not None
        try:
            with open(local_path, "rb") as fh:
                copied = checked_copy(
                    fh, None, text=fmt != "parquet", source=source, limit=settings.max_source_bytes, quote=quote
                )
        except OSError as exc:
            raise InputError(f"cannot read {source}: {exc.strerror or exc}") from None
        staged = StagedSource(source, local_path, fmt, fmt, copied.sha256, copied.size, temporary=False)
    else:
        staged, copied = _stage_copy(source, fmt, compression, settings, quote, transcoder)
    staged = replace(
        staged, encoding=reading.encoding if fmt != "parquet" else staged.encoding, values=reading.value_formats()
    )
    try:
        if staged.size_bytes == 0:
            raise InputError(f"{source} is empty: nothing to import")
        if fmt == "csv":
            staged = replace(
                staged,
                dialect=resolve_dialect(
                    staged.path, source, reading.delimiter, reading.quote, fits_header, named_tsv(source)
                ),
            )
        if copied.quotes_odd:
            line, why = find_quote_problem(staged.path, staged.dialect.delimiter, staged.dialect.quote)
            raise InputError(
                f'{source} line {line}: {why}; fix the quoting (a quote inside a field is written "")',
                source=source,
                line=line,
            )
    except BaseException:
        staged.cleanup()
        raise
    return staged


def _transcoder(source: str, fmt: Format, reading: ReadOptions) -> Transcoder | None:
    """What makes the source the UTF-8 text the readers scan; None when it already is."""
    escapes = fmt == "csv" and reading.escape_char != reading.quote
    if fmt == "parquet" or (reading.encoding in ("utf-8", "utf-8-sig") and not escapes):
        return None  # a UTF-8 byte order mark is skipped by the readers
    if fmt == "json":
        raise ParameterError(f"{source}: a JSON array is UTF-8 (RFC 8259): --encoding is for CSV and NDJSON files")
    return Transcoder(reading.encoding, source, reading.quote, reading.escape_char if escapes else None)


def _cr_only(path: Path, fmt: Format) -> bool:
    """True for a text file whose lines end in CR alone (the first block has CR, no LF)."""
    if fmt == "parquet":
        return False
    with open(path, "rb") as fh:
        head = fh.read(BLOCK_BYTES)
    return b"\r" in head and b"\n" not in head


def _stage_copy(
    source: str,
    fmt: Format,
    compression: str | None,
    settings: Settings,
    quote: bytes | None,
    transcoder: Transcoder | None,
) -> tuple[StagedSource, Copied]:
    staging = Path(settings.home) / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    read_as: Format = "ndjson" if fmt == "json" else fmt
    fd, name = tempfile.mkstemp(dir=staging, suffix=f".{read_as}")
    try:
        with _open_source(source, compression, settings) as src, os.fdopen(fd, "wb") as dst:
            if fmt == "json":
                copied = json_array_to_ndjson(src, dst, source, settings.max_source_bytes, settings.max_record_bytes)
            else:
                text, limit = fmt != "parquet", settings.max_source_bytes
                copied = checked_copy(
                    src, dst, text=text, source=source, limit=limit, quote=quote, transcoder=transcoder
                )
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        Path(name).unlink(missing_ok=True)
        raise InputError(f"cannot read {source}: {first_line(exc)}") from None
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    verbatim = compression is None and fmt == read_as and not copied.rewritten
    staged = StagedSource(
        source, Path(name), read_as, fmt, copied.sha256, copied.size, temporary=True, verbatim=verbatim
    )
    return staged, copied


@contextmanager
def _open_source(source: str, compression: str | None, settings: Settings) -> Iterator[IO[bytes]]:
    """A binary stream of the source's (decompressed) content.

    http(s) goes through httpx (a Prefect dependency, streamed); other URLs through fsspec
    (`files.storage`: s3:// needs the `s3` extra)."""
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
            raw = io.BufferedReader(
                _IteratorReader(limited(response.iter_bytes(), source, settings)), buffer_size=BLOCK_BYTES
            )
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
