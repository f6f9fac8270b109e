"""Which remote sources bulkflow may fetch, and the limits of a download.

One policy for every caller (CLI, flows, deployments, the HTTP API): a remote source's
scheme must be allowed (`BULKFLOW_URL_SCHEMES`, http and https by default), and its host
must not resolve to loopback, private, link-local, multicast or reserved (cloud metadata)
addresses unless `BULKFLOW_ALLOW_PRIVATE_URLS` is set. Every hop of a redirect is checked.
Downloads stop at `BULKFLOW_MAX_SOURCE_BYTES` and `BULKFLOW_FETCH_TIMEOUT`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from bulkflow.errors import InputError, ParameterError, RetryableError, TooLargeError
from bulkflow.settings import get_settings


def is_remote(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def check_remote_url(url: str) -> None:
    """Refuse (ParameterError) a URL whose scheme is not allowed or whose host is internal."""
    settings = get_settings()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    allowed = tuple(s.lower() for s in settings.url_schemes)
    if scheme not in allowed:
        raise ParameterError(f"refused URL {url!r}: scheme {scheme or 'none'!r} is not one of {', '.join(allowed)}")
    if scheme not in ("http", "https") or settings.allow_private_urls:
        return  # object stores are addressed by bucket, not by host
    if not parts.hostname:
        raise ParameterError(f"refused URL {url!r}: it names no host")
    for address in _resolve(parts.hostname, parts.port or (443 if scheme == "https" else 80)):
        if _is_internal(address):
            raise ParameterError(
                f"refused URL {url!r}: {parts.hostname} resolves to the internal address {address} "
                "(set BULKFLOW_ALLOW_PRIVATE_URLS=true to allow loopback and private networks)"
            )


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def _is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
        or address.is_reserved or address.is_unspecified
    )


def check_size(size: int, source: str, limit: int | None = None) -> None:
    """TooLargeError once `size` bytes exceed `limit` (default BULKFLOW_MAX_SOURCE_BYTES)."""
    limit = get_settings().max_source_bytes if limit is None else limit
    if size > limit:
        raise TooLargeError(f"{source} is larger than the {limit} byte limit (BULKFLOW_MAX_SOURCE_BYTES)")


def limited(chunks: Iterator[bytes], source: str) -> Iterator[bytes]:
    """Pass the chunks through, failing once the download is too large or too slow."""
    settings = get_settings()
    deadline = time.monotonic() + settings.fetch_timeout_s
    size = 0
    for chunk in chunks:
        size += len(chunk)
        check_size(size, source)
        if time.monotonic() > deadline:
            raise RetryableError(
                f"downloading {source} took longer than {settings.fetch_timeout_s:.0f}s (BULKFLOW_FETCH_TIMEOUT)"
            )
        yield chunk
