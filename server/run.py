"""Run the control service under uvicorn (``tka serve``).

The listening socket is bound here, before uvicorn starts, so that a port of
0 works: the bound address is logged (``listening`` event) and, with
*port_file*, written to a file for scripts and tests.

Shutdown: on SIGTERM or SIGINT uvicorn stops accepting connections, lets the
requests in flight finish (up to *graceful_timeout* seconds), then the store
is closed. Every write is committed before its answer is sent, so a write
that was answered is never lost, not even on SIGKILL.
"""

from __future__ import annotations

import logging.config
import os
import signal
import socket

from tka._fileutil import atomic_write
from tka.control.service import ControlService
from tka.control.store import open_store
from tka.errors import UsageError

from .app import create_app
from .logs import log_config, log_event

__all__ = ["parse_listen", "serve"]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) into its parts."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
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
) -> None:
    """Serve until SIGTERM/SIGINT. Raises :class:`~tka.errors.TKAError` on bad settings."""
    import uvicorn

    config_dict = log_config(log_level)
    logging.config.dictConfig(config_dict)
    host, port = parse_listen(listen)
    store = open_store(store_url)
    try:
        service = ControlService(store)
        app = create_app(service, on_shutdown=store.close)
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
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM itself (graceful shutdown), then re-raises it
    # under the handler that was there before: make that one a clean exit,
    # so a graceful stop ends with status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server.run(sockets=[sock])


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
