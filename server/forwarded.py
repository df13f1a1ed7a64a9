"""Behind a trusted proxy: the forwarded client address, and its cap.

A reverse proxy connects from its own address, so counting connections by
peer address would put every client behind it under one cap. With
``--trusted-proxy`` (addresses or networks), a request arriving from a
trusted proxy is attributed to the right-most entry of its
``X-Forwarded-For`` that is not itself a trusted proxy: the address the
nearest trusted proxy saw, which a client cannot forge (the entries left of
it are whatever the client sent). Such a request counts against that
address's cap (the same *per_address* as direct connections, in requests in
progress) and gets 503 past it; the proxy's own connections are not capped
by address. Requests from any other peer are left alone: their
``X-Forwarded-For`` is ignored and their connections were counted when
accepted.

uvicorn's ``ProxyHeadersMiddleware`` picks the same entry, but gives no
hook to count by it and its parser is private, so this middleware does
both and uvicorn's is switched off (``proxy_headers=False``): one parser
decides. The application sees the forwarded address as ``scope["client"]``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tka.errors import UsageError

from .connections import ConnectionGuard

__all__ = ["ForwardedLimit", "TrustedProxies"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_BUSY_BODY = b'{"error":"too many requests from this address","code":"too_many_connections"}\n'


class TrustedProxies:
    """A set of proxy addresses and networks (``10.0.0.1``, ``10.0.0.0/8``, ``::1``)."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        nets: list[_Network] = []
        for entry in entries:
            try:
                nets.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise UsageError(
                    f"--trusted-proxy: {entry!r} is not an IP address or network"
                ) from None
        self.networks: Sequence[_Network] = tuple(nets)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: object) -> bool:
        if not self.networks or not isinstance(host, str):
            return False
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def client_address(self, peer: str, forwarded_for: Sequence[str]) -> str:
        """The address a request from *peer* counts against.

        *forwarded_for* are the ``X-Forwarded-For`` header values in order.
        For a trusted *peer*: the right-most entry that is not a trusted
        proxy (all trusted: the left-most; none: *peer*). Otherwise *peer*.
        """
        if peer not in self:
            return peer
        hops = [_host(h) for value in forwarded_for for h in value.split(",")]
        hops = [h for h in hops if h]
        for hop in reversed(hops):
            if hop not in self:
                return hop
        return hops[0] if hops else peer


def _host(entry: str) -> str:
    """An X-Forwarded-For entry without its port or brackets; at most 64 characters."""
    entry = entry.strip()[:64]
    if entry.startswith("["):
        return entry[1:].partition("]")[0]
    if entry.count(":") == 1:  # IPv4 with a port
        return entry.partition(":")[0]
    return entry


class ForwardedLimit:
    """ASGI middleware: attribute proxied requests to the forwarded address and cap them."""

    def __init__(self, app: ASGIApp, trusted: TrustedProxies, guard: ConnectionGuard) -> None:
        self.app = app
        self.trusted = trusted
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] != "http" or not client or client[0] not in self.trusted:
            await self.app(scope, receive, send)
            return
        values = [
            v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-forwarded-for"
        ]
        address = self.trusted.client_address(client[0], values)
        scope = {**scope, "client": (address, 0)}
        if not self.guard.acquire_forwarded(address):
            await _busy(send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.guard.release_forwarded(address)


async def _busy(send: Send) -> None:
    start: dict[str, Any] = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(_BUSY_BODY)).encode()),
            (b"retry-after", b"1"),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": _BUSY_BODY})
