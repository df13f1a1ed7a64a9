"""Run the control service under uvicorn (``tka serve``).

The listening socket is bound here, before uvicorn starts, so that a port of
0 works: the bound address is logged (``listening`` event) and, with
*port_file*, written to a file for scripts and tests.

Shutdown: on SIGTERM or SIGINT uvicorn stops accepting connections, lets the
requests in flight finish (up to *graceful_timeout* seconds), then the store
is closed. Every write is committed before its answer is sent, so a write
that was answered is never lost, not even on SIGKILL.

Slow and idle clients (see :class:`Limits`), using uvicorn's own settings
where it has one:

* ``http="h11"``: uvicorn's pure-Python HTTP/1.1 parser, whose
  ``h11_max_incomplete_event_size`` bounds a request's head (16 KiB: ours
  are a few hundred bytes) so a client cannot make the server buffer an
  endless header;
* ``timeout_keep_alive`` (5 s): an idle kept-alive connection is closed;
* ``limit_concurrency`` (*max_connections*, 1000): past it, new requests
  get 503 at once instead of queueing without bound;
* ``ws="none"``: no WebSocket upgrades (the service has none);
* a **header deadline** uvicorn lacks (*header_timeout*, 20 s): the whole
  request head must arrive within that long of the connection opening or
  of the previous answer, else the connection is closed. uvicorn cancels
  its keep-alive timer on the first byte and has no other header timer, so
  a client sending one byte a second would hold a connection forever; the
  deadline is added by subclassing uvicorn's h11 protocol (a timer armed
  when a connection opens or an answer completes, cancelled when a request
  head is complete);
* a **body deadline** in the application (ASGI level, see
  :func:`tka_server.app.create_app`): the body must arrive at
  *body_min_rate* bytes/s after a *body_timeout* grace, or 408 and close;
  and it is read only after the token was checked.
"""

from __future__ import annotations

import asyncio
import logging.config
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

from tka._fileutil import atomic_write
from tka.control.service import ControlService
from tka.control.store import open_store
from tka.errors import UsageError

from .app import BodyLimits, create_app
from .logs import log_config, log_event

__all__ = ["Limits", "parse_listen", "serve"]


@dataclass(frozen=True)
class Limits:
    """How long and how many: the connection limits ``tka serve`` applies.

    The defaults cut a client sending its headers at one byte a second off
    after *header_timeout* (20 s, well inside a minute), and one stalling
    its body after *body_timeout* plus what it sent divided by
    *body_min_rate*.
    """

    header_timeout: float = 20.0
    """Seconds for a whole request head, from connect or the previous answer."""
    body_timeout: float = 10.0
    """Grace seconds before the body's minimum rate applies."""
    body_min_rate: float = 16 * 1024
    """Bytes per second a request body must average after the grace."""
    keep_alive: int = 5
    """Seconds an idle kept-alive connection stays open (uvicorn's ``timeout_keep_alive``)."""
    max_connections: int = 1000
    """Concurrent connections (uvicorn's ``limit_concurrency``); 503 past it."""
    max_head_bytes: int = 16 * 1024
    """Largest request head (uvicorn's ``h11_max_incomplete_event_size``)."""


def _h11_with_header_deadline(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol plus a deadline for each request head."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(header_timeout, self._head_too_slow)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            cycle = self.cycle
            if cycle is None or cycle.response_complete:
                log_event("header_timeout", logging.INFO, seconds=header_timeout)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:
                self._disarm()  # a request head arrived whole

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._arm()  # the next head must come in time too
            super().on_response_complete()

    return DeadlineH11Protocol


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into its parts."""
    host, sep, port_text = text.rpartition(":")
    if (
        not sep
        or not host
        or not (port_text.isascii() and port_text.isdigit())
        or len(port_text) > 5
        or int(port_text) > 65535
    ):
        raise UsageError("--listen: expected HOST:PORT, e.g. 127.0.0.1:8080")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets
    # only when the protocol says TCP, and without it every answer on a
    # kept-alive connection waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"--listen: cannot bind {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(
    store_url: str,
    listen: str = "127.0.0.1:8080",
    *,
    port_file: str | None = None,
    log_level: str = "info",
    graceful_timeout: float = 30.0,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT. Raises :class:`~tka.errors.TKAError` on bad settings."""
    import uvicorn

    limits = limits or Limits()
    if limits.header_timeout <= 0 or limits.body_timeout <= 0 or limits.body_min_rate <= 0:
        raise UsageError("timeouts and the minimum body rate must be positive")
    if limits.max_connections < 1:
        raise UsageError("--max-connections: must be at least 1")

    config_dict = log_config(log_level)
    logging.config.dictConfig(config_dict)
    host, port = parse_listen(listen)
    store = open_store(store_url)
    try:
        service = ControlService(store)
        app = create_app(
            service,
            on_shutdown=store.close,
            body_limits=BodyLimits(limits.body_timeout, limits.body_min_rate),
        )
        sock = _bind(host, port)
    except BaseException:
        store.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    if port_file:
        atomic_write(os.path.abspath(port_file), f"{bound_port}\n".encode(), 0o644)
    log_event(
        "listening",
        address=f"{bound_host}:{bound_port}",
        store=store.url_scheme,
        tls=bool(tls_cert),
    )
    config = uvicorn.Config(
        app,
        log_config=config_dict,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(graceful_timeout),
        server_header=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        http=_h11_with_header_deadline(limits.header_timeout),
        ws="none",
        h11_max_incomplete_event_size=limits.max_head_bytes,
        timeout_keep_alive=limits.keep_alive,
        limit_concurrency=limits.max_connections,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM itself (graceful shutdown), then re-raises it
    # under the handler that was there before: make that one a clean exit,
    # so a graceful stop ends with status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server.run(sockets=[sock])


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
