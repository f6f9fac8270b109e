"""Getting a source into a local, uncompressed, UTF-8 checked file the readers can scan.

Local plain files are used in place; compressed, remote (http(s)://, s3:// via fsspec) and
JSON-array files are streamed once into `BULKFLOW_HOME/staging`. The same pass computes
the content checksum that names the import job, so a re-run of the same content is
recognised whatever the file is called.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, get_args

import fsspec
import polars as pl

from bulkflow.errors import InputError, ParameterError, RetryableError
from bulkflow.settings import get_settings
from tasks.remote import check_remote_url, check_size, is_remote, limited

Format = Literal["csv", "ndjson", "json", "parquet"]
FORMATS: tuple[str, ...] = get_args(Format)
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

    def cleanup(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


def check_format(name: str) -> Format:
    """`name` as one of the formats we read and write; ParameterError naming them otherwise."""
    if name not in FORMATS:
        raise ParameterError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}")
    return name  # type: ignore[return-value]


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
    """Cheap checks before any work: (format, compression, local path or None if remote)."""
    fmt, compression = detect_format(source, format_override)
    local_path = None if is_remote(source) else Path(source.removeprefix("file://"))
    if local_path is not None and not local_path.is_file():
        raise InputError(f"file not found: {source}")
    return fmt, compression, local_path


def stage_source(source: str, format_override: str | None = None) -> StagedSource:
    """Make `source` a local, checked file; raise InputError saying what to fix."""
    fmt, compression, local_path = check_source(source, format_override)
    in_place = local_path is not None and compression is None and fmt != "json"
    if in_place:
        with open(local_path, "rb") as fh:  # type: ignore[arg-type]
            digest, size = checked_copy(fh, None, text=fmt != "parquet", source=source)
        staged = StagedSource(source, local_path, fmt, fmt, digest, size, temporary=False)  # type: ignore[arg-type]
    else:
        staged = _stage_copy(source, fmt, compression)
    if staged.size_bytes == 0:
        staged.cleanup()
        raise InputError(f"{source} is empty: nothing to import")
    return staged


def _stage_copy(source: str, fmt: Format, compression: str | None) -> StagedSource:
    staging = Path(get_settings().home) / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    read_as: Format = "ndjson" if fmt == "json" else fmt
    fd, name = tempfile.mkstemp(dir=staging, suffix=f".{read_as}")
    try:
        with _open_source(source, compression) as src, os.fdopen(fd, "wb") as dst:
            if fmt == "json":
                digest, size = _json_array_to_ndjson(src, dst, source)
            else:
                digest, size = checked_copy(src, dst, text=fmt != "parquet", source=source)
    except (OSError, EOFError, ValueError) as exc:
        Path(name).unlink(missing_ok=True)
        raise InputError(f"cannot read {source}: {exc}") from exc
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return StagedSource(source, Path(name), read_as, fmt, digest, size, temporary=True)


@contextmanager
def _open_source(source: str, compression: str | None) -> Iterator[IO[bytes]]:
    """A binary stream of the source's (decompressed) content.

    http(s) goes through httpx (a Prefect dependency, streamed); other URLs through fsspec
    (s3:// and friends need their fsspec package installed)."""
    if is_remote(source):
        check_remote_url(source)
    if not source.lower().startswith(("http://", "https://")):
        with fsspec.open(source, "rb", compression=compression) as stream:
            yield stream
        return
    import httpx  # here: only http sources need it, and importing it slows every start-up

    # Each redirect hop goes through the same URL policy as the first request.
    hooks = {"request": [lambda request: check_remote_url(str(request.url))]}
    try:
        with (
            httpx.Client(follow_redirects=True, timeout=httpx.Timeout(**_HTTP_TIMEOUTS), event_hooks=hooks) as client,
            client.stream("GET", source) as response,
        ):
            if response.status_code >= 400:
                raise InputError(f"cannot download {source}: HTTP {response.status_code}")
            raw = io.BufferedReader(_IteratorReader(limited(response.iter_bytes(), source)), buffer_size=_BLOCK)
            yield gzip.GzipFile(fileobj=raw) if compression == "gzip" else raw  # type: ignore[misc]
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

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        while not self.pending:
            try:
                self.pending = next(self.chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self.pending))
        buffer[:size], self.pending = self.pending[:size], self.pending[size:]
        return size


def checked_copy(
    src: IO[bytes], dst: IO[bytes] | None, *, text: bool, source: str, size_limited: bool = False
) -> tuple[str, int]:
    """Stream `src` (to `dst` if given), hashing it and, for text, checking it is UTF-8;
    with `size_limited`, failing past BULKFLOW_MAX_SOURCE_BYTES. Returns (sha256, bytes)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")() if text else None
    size, line = 0, 1
    while block := src.read(_BLOCK):
        if size_limited:
            check_size(size + len(block), source)
        digest.update(block)
        if decoder is not None:
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                bad_line = line + block[: exc.start].count(b"\n")
                raise InputError(
                    f"{source} is not valid UTF-8 (line {bad_line}, byte {size + exc.start}): "
                    "re-encode the file as UTF-8"
                ) from None
            line += block.count(b"\n")
        if dst is not None:
            dst.write(block)
        size += len(block)
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"{source} ends in the middle of a UTF-8 character") from None
    return digest.hexdigest(), size


def _json_array_to_ndjson(src: IO[bytes], dst: IO[bytes], source: str) -> tuple[str, int]:
    """Stream a top-level JSON array into NDJSON, one element a line, in bounded memory."""
    digest = hashlib.sha256()
    reader = codecs.getreader("utf-8")(src)
    decoder = json.JSONDecoder()
    buffer, position, size, started, element = "", 0, 0, False, 0
    while True:
        # Skip separators between elements; pull more text when the buffer runs dry.
        while True:
            while position < len(buffer) and buffer[position] in " \t\r\n,\ufeff":
                position += 1
            if position < len(buffer):
                break
            chunk = _read_text(reader, source)
            if not chunk:
                raise InputError(f"{source}: the JSON array is not closed (expected ']')")
            digest.update(chunk.encode())
            size += len(chunk)
            buffer, position = buffer[position:] + chunk, 0
        if not started:
            if buffer[position] != "[":
                raise InputError(f"{source} is not a JSON array: it must start with '['")
            started, position = True, position + 1
            continue
        if buffer[position] == "]":
            break
        while True:
            try:
                obj, end = decoder.raw_decode(buffer, position)
                break
            except json.JSONDecodeError as exc:
                chunk = _read_text(reader, source)
                if not chunk:
                    raise InputError(
                        f"{source}: element {element + 1} of the JSON array is not valid JSON: {exc.msg}"
                    ) from None
                digest.update(chunk.encode())
                size += len(chunk)
                buffer, position = buffer[position:] + chunk, 0
        element += 1
        dst.write(json.dumps(obj, ensure_ascii=False).encode() + b"\n")
        buffer, position = buffer[end:], 0
    # Hash whatever trails the array too, so the checksum covers the whole file.
    shutil.copyfileobj(reader, _HashSink(digest))
    return digest.hexdigest(), size


def _read_text(reader: codecs.StreamReader, source: str) -> str:
    try:
        return reader.read(_BLOCK)
    except UnicodeDecodeError:
        raise InputError(f"{source} is not valid UTF-8: re-encode the file as UTF-8") from None


class _HashSink:
    def __init__(self, digest: hashlib._Hash) -> None:
        self.digest = digest

    def write(self, text: str) -> int:
        self.digest.update(text.encode())
        return len(text)


def read_columns(staged: StagedSource) -> list[str]:
    """The columns a file declares: CSV header, Parquet schema, keys of the first NDJSON lines."""
    try:
        if staged.format == "csv":
            return pl.scan_csv(staged.path, infer_schema=False).collect_schema().names()
        if staged.format == "parquet":
            return pl.scan_parquet(staged.path).collect_schema().names()
        return _ndjson_keys(staged.path, sample_lines=1000)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"cannot read {staged.source} as {staged.declared_format}: {_first_line(exc)}") from exc


def _ndjson_keys(path: Path, sample_lines: int) -> list[str]:
    """Union of the keys of the first lines that are JSON objects (malformed ones skipped)."""
    keys: dict[str, None] = {}
    with open(path, encoding="utf-8") as fh:
        for _, line in zip(range(sample_lines), fh):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                keys.update(dict.fromkeys(record))
    return list(keys)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
