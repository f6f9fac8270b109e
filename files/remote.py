"""Which remote sources bulkflow may fetch, and the limits of a download.

One policy for every caller (CLI, flows, deployments, the HTTP API): a remote source's
scheme must be allowed (`BULKFLOW_URL_SCHEMES`, http and https by default), and its host
must resolve to global addresses only (no loopback, private, shared, link-local, multicast
or reserved ones, cloud metadata included, nor IPv6 forms that embed them) unless
`BULKFLOW_ALLOW_PRIVATE_URLS` is set. Every hop of a redirect is checked.
Downloads stop at `BULKFLOW_MAX_SOURCE_BYTES` and `BULKFLOW_FETCH_TIMEOUT`.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from bulkflow.errors import InputError, ParameterError, RetryableError, TooLargeError
from bulkflow.settings import Settings


def is_remote(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def is_http(source: str) -> bool:
    """An http(s) URL (fetched with httpx; other URLs go through fsspec)."""
    return source.lower().startswith(("http://", "https://"))


def check_remote_url(url: str, settings: Settings) -> None:
    """Refuse (ParameterError) a URL whose scheme is not allowed or whose host is internal."""
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
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
"""Deprecated IPv4-compatible IPv6 addresses (`::127.0.0.1`): the low 32 bits are the IPv4."""
_ALSO_INTERNAL = (
    ipaddress.ip_network("192.0.0.0/24"),
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64 (RFC 8215): translates to internal networks
)
"""Special-purpose blocks that Python's `is_global` still calls global."""


def _is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True unless the address, and every IPv4 address it carries (IPv4-mapped,
    IPv4-compatible, 6to4, Teredo, NAT64), is global and not reserved: shared address space (100.64.0.0/10, where some clouds put
    their metadata service), 192.0.0.0/24 and the like are internal too."""
    return any(
        not a.is_global or a.is_multicast or a.is_reserved or any(a in network for network in _ALSO_INTERNAL)
        for a in _carried(address)
    )


def _carried(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address itself and the IPv4 addresses embedded in it."""
    if isinstance(address, ipaddress.IPv4Address):
        return [address]
    embedded: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if address.ipv4_mapped is not None:
        embedded.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.extend(address.teredo)
    if address in _NAT64 or address in _IPV4_COMPATIBLE:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return embedded


def check_size(size: int, source: str, limit: int) -> None:
    """TooLargeError once `size` bytes exceed `limit` (BULKFLOW_MAX_SOURCE_BYTES)."""
    if size > limit:
        raise TooLargeError(
            f"{source} is larger than the {limit} byte limit (BULKFLOW_MAX_SOURCE_BYTES)", source=source
        )


def limited(chunks: Iterator[bytes], source: str, settings: Settings) -> Iterator[bytes]:
    """Pass the chunks through, failing once the download is too large or too slow."""
    deadline = time.monotonic() + settings.fetch_timeout_s
    size = 0
    for chunk in chunks:
        size += len(chunk)
        check_size(size, source, settings.max_source_bytes)
        if time.monotonic() > deadline:
            raise RetryableError(
                f"downloading {source} took longer than {settings.fetch_timeout_s:.0f}s (BULKFLOW_FETCH_TIMEOUT)"
            )
        yield chunk
