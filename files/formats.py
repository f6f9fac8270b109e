"""A file's format told from its name (or given), checked early.

Also how a run names its file, and the cheap checks of a local path before any work.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from bulkflow.errors import InputError, ParameterError
from files.remote import is_remote
from schemas.parameters import FORMATS, Format, check_format

_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


_COMPRESSIONS = {".gz": "gzip"}
_COUNTED_UP_TO = 8 << 20
"""Larger files are not counted: at about 100 bytes a row, more rows than the default chunk."""


def named_tsv(source: str) -> bool:
    """Whether the file's name says it is tab-separated (`.tsv`, `.tsv.gz`)."""
    suffixes = [s.lower() for s in Path(source.split("?")[0]).suffixes]
    return ".tsv" in suffixes[-2:]


def display_name(source: str, given: str | None = None) -> str:
    """How a run names its file: `given` (an upload's original name), else the last part of
    the source's path or URL."""
    if given:
        return given
    path = urlsplit(source).path if is_remote(source) else source
    return PurePosixPath(path).name or source


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
    raise ParameterError(f"cannot tell the format of {source!r} from its name: pass --format ({', '.join(FORMATS)})")


def records_at_most(source: str, format: Format | None) -> int | None:
    """An upper bound on the records of a local, uncompressed CSV, NDJSON or JSON file of
    at most 8 MiB, from its bytes: a record of CSV or NDJSON ends a line (LF, CR or CRLF),
    each of a JSON array but the last is followed by a comma. None for any other file (one
    elsewhere, compressed, Parquet, larger), whose records only a read tells."""
    if is_remote(source):
        return None
    try:
        fmt, compression = detect_format(source, format)
        path = Path(source.removeprefix("file://"))
        if compression or fmt == "parquet" or path.stat().st_size > _COUNTED_UP_TO:
            return None
        data = path.read_bytes()
    except (ParameterError, OSError):
        return None  # staging says what is wrong with such a source
    if fmt == "json":
        return data.count(b",") + 1
    return data.count(b"\n") + data.count(b"\r") + 1


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
