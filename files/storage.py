"""Files in storage: local paths and fsspec URLs (`s3://` with the `s3` extra, `gs://`,
`az://`... with theirs), opened with the options the settings give. For S3 that is
`BULKFLOW_S3_ENDPOINT_URL` (an S3-compatible store: MinIO, Ceph, a loopback test server);
credentials come the usual AWS way (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a profile,
an instance role), read by botocore itself.
"""

from __future__ import annotations

from typing import Any

import fsspec
from fsspec.core import OpenFile, split_protocol
from fsspec.spec import AbstractFileSystem

from bulkflow.errors import ParameterError, first_line
from bulkflow.settings import Settings

_EXTRAS = {"s3": "s3", "s3a": "s3"}
"""The bulkflow extra that brings a protocol's fsspec package."""


def storage_options(settings: Settings, url: str) -> dict[str, Any]:
    """The fsspec options for `url` from the settings (none for local paths)."""
    protocol = split_protocol(url)[0]
    if protocol not in ("s3", "s3a"):
        return {}
    # Signature version 4 everywhere: botocore presigns with the deprecated version 2
    # unless told, which regions opened since 2014 refuse.
    options: dict[str, Any] = {"config_kwargs": {"signature_version": "s3v4"}}
    if settings.s3_endpoint_url:
        options["endpoint_url"] = settings.s3_endpoint_url
    return options


def open_file(settings: Settings, url: str, mode: str = "rb", **options: Any) -> OpenFile:
    """`fsspec.open` with the settings' storage options (use it as a context manager)."""
    try:
        return fsspec.open(url, mode, **storage_options(settings, url), **options)
    except ImportError as missing:
        raise _missing_package(url, missing) from None


def filesystem(settings: Settings, url: str) -> tuple[AbstractFileSystem, str]:
    """The file system of `url` and the path in it."""
    try:
        return fsspec.core.url_to_fs(url, **storage_options(settings, url))
    except ImportError as missing:
        raise _missing_package(url, missing) from None


def _missing_package(url: str, missing: ImportError) -> ParameterError:
    protocol = split_protocol(url)[0] or "file"
    extra = _EXTRAS.get(protocol)
    hint = f"pip install 'bulkflow[{extra}]'" if extra else first_line(missing)
    return ParameterError(f"{protocol}:// storage needs its fsspec package: {hint}")


def holds_files(settings: Settings, url: str) -> bool:
    """Whether a directory `url` exists with anything in it."""
    fs, path = filesystem(settings, url)
    return bool(fs.isdir(path) and fs.ls(path))


def remove_tree(settings: Settings, url: str) -> None:
    """Remove the directory `url` and everything under it, if it exists."""
    fs, path = filesystem(settings, url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def signed_url(settings: Settings, url: str, expires_s: int) -> str | None:
    """A URL that reads the file `url` without credentials for `expires_s` seconds, signed
    now (S3's presigned GET, and the like on other object stores); None when its storage
    cannot sign one (a local path)."""
    fs, path = filesystem(settings, url)
    try:
        return str(fs.sign(path, expiration=expires_s))
    except NotImplementedError:
        return None
