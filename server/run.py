"""Run the control service under uvicorn (``tka serve``).

The listening socket is bound here, before uvicorn starts, so that a port of
0 works: the bound address is logged (``listening`` event) and, with
*port_file*, written to a file for scripts and tests.

Shutdown: on SIGTERM or SIGINT uvicorn stops accepting connections, lets the
requests in flight finish (up to *graceful_timeout* seconds), then the store
is closed. Every write is committed before its answer is sent, so a write
that was answered is never lost, not even on SIGKILL.

Connections and slow clients (see :class:`Limits`), with uvicorn's own
settings where it has one and extensions of uvicorn where it has not:

* ``http="h11"``: uvicorn's pure-Python HTTP/1.1 parser, whose
  ``h11_max_incomplete_event_size`` bounds a request's head (16 KiB: ours
  are a few hundred bytes) so a client cannot make the server buffer an
  endless header;
* ``timeout_keep_alive`` (5 s): an idle kept-alive connection is closed;
* ``ws="none"``: no WebSocket upgrades (the service has none);
* a **first-byte deadline** (5 s) and a **head deadline** (10 s) uvicorn
  lacks, in a subclass of its h11 protocol (:mod:`tka_server.protocol`);
* the **connection caps** (:mod:`tka_server.connections`,
  :mod:`tka_server.listener`): per address (64) and overall
  (*max_connections*, 1000, lowered to keep *spare_fds* descriptors free
  under the soft limit, itself raised to the hard limit at start,
  :mod:`tka_server.fdlimit`); at the cap the oldest idle connection makes
  room. uvicorn's ``limit_concurrency`` is not used: it counts a connection
  only once it holds a descriptor and a protocol, answers each request past
  it with 503 (one address can fill it), and cannot evict. So the
  listening socket is served by tka's accept loop, started from a subclass
  of ``uvicorn.Server`` (:class:`GuardedServer`) in place of
  ``loop.create_server``; uvicorn still runs the lifespan, the protocol,
  the signals and the graceful shutdown;
* behind a reverse proxy (``--trusted-proxy``), requests count against the
  forwarded address (:mod:`tka_server.forwarded`);
* a **body deadline** in the application (ASGI level, see
  :func:`tka_server.app.create_app`): the body must arrive at
  *body_min_rate* bytes/s after a *body_timeout* grace, or 408 and close;
  and it is read only after the token was checked.

Several processes (``--workers N``, :func:`_supervise`): the socket is
bound and listening before N workers are forked; each runs this same
uvicorn server and accept loop on the shared socket (the kernel hands each
connection to one of the workers that wait on it), with its own store
connections. The connection caps apply per worker, the log budget is split
between them, and limits kept in the database (disable attempts) are
shared. A worker that dies is started again; SIGTERM or SIGINT to the
supervisor stops every worker gracefully.

Logs stay JSON lines within a byte budget (:mod:`tka_server.logs`), and
what the connection machinery refused, evicted or timed out is summed up in
one ``connections`` line every 10 s instead of a line per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging.config
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tka._fileutil import atomic_write
from tka.control.errors import StoreUnavailable
from tka.control.service import ControlService
from tka.control.store import open_store
from tka.errors import TKAError, UsageError

from .app import BodyLimits, create_app
from .connections import ConnectionGuard, Slot
from .fdlimit import connection_cap, raise_soft_limit
from .forwarded import ForwardedLimit, TrustedProxies
from .listener import Listener
from .logs import (
    DEFAULT_LOG_BYTES_PER_MINUTE,
    budget_handler,
    install_hooks,
    log_config,
    log_event,
)
from .protocol import guarded_protocol_class

__all__ = ["Limits", "parse_listen", "serve"]

SUMMARY_EVERY = 10.0
"""Seconds between two ``connections`` summary lines (only when something happened)."""


@dataclass(frozen=True)
class Limits:
    """How long and how many: the connection limits ``tka serve`` applies.

    The defaults cut a client sending its headers at one byte a second off
    after *header_timeout* (10 s), and one stalling its body after
    *body_timeout* plus what it sent divided by *body_min_rate*.
    """

    header_timeout: float = 10.0
    """Seconds for a whole request head, from connect or the previous answer."""
    first_byte_timeout: float = 5.0
    """Seconds for the first byte of a new connection."""
    body_timeout: float = 10.0
    """Grace seconds before the body's minimum rate applies."""
    body_min_rate: float = 16 * 1024
    """Bytes per second a request body must average after the grace."""
    keep_alive: int = 5
    """Seconds an idle kept-alive connection stays open (uvicorn's ``timeout_keep_alive``)."""
    max_connections: int = 1000
    """Concurrent connections; at the cap the oldest idle one is closed, else 503."""
    max_connections_per_address: int = 64
    """Concurrent connections (or proxied requests) per client address; 503 past it."""
    spare_fds: int = 128
    """Descriptors kept out of the connection cap (store, log, event loop)."""
    trusted_proxies: tuple[str, ...] = field(default=())
    """Proxy addresses or networks whose X-Forwarded-For is believed."""
    max_head_bytes: int = 16 * 1024
    """Largest request head (uvicorn's ``h11_max_incomplete_event_size``)."""
    backlog: int = 4096
    """Connections the kernel queues before they are accepted (capped by ``somaxconn``)."""


class GuardedServer(uvicorn.Server):
    """uvicorn's server, with tka's accept loop on the listening socket.

    uvicorn's startup is run with no sockets (so it makes no asyncio
    server: lifespan and state only), then :class:`Listener` serves the
    socket; shutdown stops it before uvicorn's own shutdown.
    """

    listener: Listener
    guard: ConnectionGuard
    _last_summary = 0.0
    parent_pid: int | None = None
    """In a worker of ``--workers``: the supervisor's PID (the worker stops if it goes)."""
    begin_shutdown: Callable[[], None] | None = None
    """The application's hook for the start of a graceful shutdown (see create_app)."""

    def bind(self, listener: Listener, guard: ConnectionGuard) -> None:
        self.listener, self.guard = listener, guard

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        install_hooks(loop)
        await super().startup(sockets=[])
        if self.should_exit:
            return
        self.listener.start(loop)
        self._last_summary = loop.time()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.listener.close()
        self._summarize()
        if self.begin_shutdown is not None:
            self.begin_shutdown()
        await super().shutdown(sockets=sockets)

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0:  # once a second
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                self.should_exit = True  # the supervisor is gone: stop gracefully
            now = asyncio.get_running_loop().time()
            if now - self._last_summary >= SUMMARY_EVERY:
                self._last_summary = now
                self._summarize()
            handler = budget_handler()
            if handler is not None:
                handler.tick()
        return await super().on_tick(counter)

    def _summarize(self) -> None:
        seconds, counts = self.guard.take_stats()
        if counts:
            log_event(
                "connections",
                logging.WARNING,
                seconds=round(seconds, 1),
                open=self.guard.open,
                idle=self.guard.idle,
                **counts,
            )


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


def _bind(host: str, port: int, backlog: int = 4096) -> socket.socket:
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
    sock.listen(backlog)
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
    log_bytes_per_minute: int = DEFAULT_LOG_BYTES_PER_MINUTE,
    workers: int = 1,
) -> None:
    """Serve until SIGTERM/SIGINT. Raises :class:`~tka.errors.TKAError` on bad settings.

    With *workers* > 1, that many worker processes share the listening
    socket (see :func:`_supervise`); each runs its own event loop, accept
    loop and store connections, and the connection caps and the log budget
    are split between them.
    """
    limits = limits or Limits()
    if (
        limits.header_timeout <= 0
        or limits.first_byte_timeout <= 0
        or limits.body_timeout <= 0
        or limits.body_min_rate <= 0
    ):
        raise UsageError("timeouts and the minimum body rate must be positive")
    if limits.max_connections < 1:
        raise UsageError("--max-connections: must be at least 1")
    if limits.max_connections_per_address < 1:
        raise UsageError("--max-connections-per-address: must be at least 1")
    if limits.backlog < 1:
        raise UsageError("--backlog: must be at least 1")
    if limits.spare_fds < 0:
        raise UsageError("--spare-fds: must not be negative")
    if log_bytes_per_minute < 10_000:
        raise UsageError("--log-bytes-per-minute: must be at least 10000")
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"--workers: must be from 1 to {MAX_WORKERS}")
    if workers > 1 and not hasattr(os, "fork"):
        raise UsageError("--workers: more than 1 needs os.fork (Linux, macOS)")
    trusted = TrustedProxies(limits.trusted_proxies)

    # The log budget is the whole service's: each worker gets an equal share
    # (at least 10,000 bytes a minute, so a worker can always report trouble).
    config_dict = log_config(log_level, max(10_000, log_bytes_per_minute // workers))
    logging.config.dictConfig(config_dict)
    install_hooks()
    soft_before, soft, hard = raise_soft_limit()
    cap = connection_cap(limits.max_connections, soft, limits.spare_fds)
    host, port = parse_listen(listen)
    # Opened here once, before any worker: creates or upgrades the schema,
    # and a store that cannot be opened fails the start with its message.
    store = open_store(store_url)
    try:
        service = ControlService(store)
        sock = _bind(host, port, limits.backlog)
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
        workers=workers,
        max_connections=cap,
        per_address=limits.max_connections_per_address,
        fd_limit=soft,
        fd_limit_before=soft_before,
        fd_hard_limit=hard,
        trusted_proxies=len(trusted.networks),
    )
    if cap < limits.max_connections:
        log_event(
            "max_connections_lowered",
            logging.WARNING,
            requested=limits.max_connections,
            used=cap,
            fd_limit=soft,
            spare_fds=limits.spare_fds,
        )
    worker = _Worker(
        sock=sock,
        config_dict=config_dict,
        limits=limits,
        trusted=trusted,
        cap=cap,
        graceful_timeout=graceful_timeout,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    if workers == 1:
        worker.run(service)
        return
    # Each worker opens its own store after the fork: no connection, thread
    # or pool is shared between processes.
    store.close()

    def run_worker(index: int) -> None:
        log_event("worker_started", worker=index, pid=os.getpid())
        worker.run(ControlService(open_store(store_url)), parent_pid=os.getppid())

    _supervise(workers, run_worker)


#: Most worker processes ``--workers`` takes.
MAX_WORKERS = 256


@dataclass(frozen=True)
class _Worker:
    """What one serving process needs: the shared socket and the settings."""

    sock: socket.socket
    config_dict: dict[str, Any]
    limits: Limits
    trusted: TrustedProxies
    cap: int
    graceful_timeout: float
    tls_cert: str | None
    tls_key: str | None

    def run(self, service: ControlService, parent_pid: int | None = None) -> None:
        """Serve on the socket until told to stop (the store is closed on shutdown)."""
        limits, trusted = self.limits, self.trusted
        guard = ConnectionGuard(self.cap, limits.max_connections_per_address, trusted.__contains__)

        def stop_service() -> None:
            # Heads nodes reported since the last flush, then the store.
            service.flush_reported_heads()
            service.store.close()

        try:
            app = create_app(
                service,
                on_shutdown=stop_service,
                body_limits=BodyLimits(limits.body_timeout, limits.body_min_rate),
            )
        except BaseException:
            service.store.close()
            raise
        protocol_class = guarded_protocol_class(
            guard, limits.first_byte_timeout, limits.header_timeout
        )
        config = uvicorn.Config(
            ForwardedLimit(app, trusted, guard) if trusted else app,
            log_config=self.config_dict,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=int(self.graceful_timeout),
            server_header=False,
            ssl_certfile=self.tls_cert,
            ssl_keyfile=self.tls_key,
            http=protocol_class,
            ws="none",
            h11_max_incomplete_event_size=limits.max_head_bytes,
            timeout_keep_alive=limits.keep_alive,
            # Forwarded addresses are tka's business (ForwardedLimit): uvicorn
            # would otherwise believe X-Forwarded-For from 127.0.0.1.
            proxy_headers=False,
        )
        config.load()  # the TLS context, the protocol class (uvicorn would load it later)
        server = GuardedServer(config)
        server.parent_pid = parent_pid
        server.begin_shutdown = app.state.begin_shutdown
        state = server.server_state

        def make_protocol(slot: Slot) -> asyncio.Protocol:
            proto = protocol_class(
                config=config, server_state=state, app_state=server.lifespan.state
            )
            proto.slot = slot
            return proto

        server.bind(
            Listener(
                self.sock,
                guard,
                make_protocol,
                ssl_context=config.ssl if self.tls_cert else None,
                handshake_timeout=limits.header_timeout,
                first_byte_timeout=limits.first_byte_timeout,
            ),
            guard,
        )
        # uvicorn handles SIGTERM itself (graceful shutdown), then re-raises it
        # under the handler that was there before: make that one a clean exit,
        # so a graceful stop ends with status 0.
        signal.signal(signal.SIGTERM, _exit_cleanly)
        try:
            server.run(sockets=[self.sock])
        finally:
            handler = budget_handler()
            if handler is not None:
                handler.tick(force=True)  # what was dropped since the last summary


#: A worker that exits this soon after its start, this many times in a row,
#: is not restarted again: the supervisor stops the others and fails.
_QUICK_EXIT_SECONDS = 5.0
_QUICK_EXITS = 5
_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def _supervise(workers: int, run_worker: Callable[[int], None]) -> None:
    """Pre-fork *workers* processes that share the listening socket, and keep them running.

    The socket was bound and is listening before the fork, so connections
    queue in the kernel even while a worker restarts; each worker accepts
    from it with its own accept loop (:class:`Listener`). The supervisor
    only watches: a worker that dies (a crash, SIGKILL) is started again;
    SIGTERM or SIGINT to the supervisor is passed on as SIGTERM (each worker
    then shuts down gracefully) and it returns once every worker has
    exited. Workers run in their own process group (a terminal's Ctrl-C
    reaches the supervisor only) and stop by themselves if the supervisor
    dies (``PR_SET_PDEATHSIG`` on Linux, else within a second).
    """
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, start time)
    stopping = False
    quick_exits = 0
    failed = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log_event("stopping", signal=signal.Signals(signum).name, workers=len(children))
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def spawn(index: int) -> None:
        parent = os.getpid()
        # Signals wait until the worker has its own handlers (the
        # supervisor's would stop its siblings).
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
                os.setpgid(0, 0)
                _die_with_parent()
                if os.getppid() != parent:
                    os._exit(0)  # the supervisor died before the watch was set
                run_worker(index)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            except BaseException as exc:
                why = str(exc) if isinstance(exc, TKAError) else type(exc).__name__
                log_event("worker_failed", logging.ERROR, worker=index, error=why)
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = (index, time.monotonic())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        if stopping:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for i in range(workers):
        spawn(i)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        found = children.pop(pid, None)
        if found is None:
            continue
        index, started = found
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        log_event("worker_exited", logging.WARNING, worker=index, pid=pid, status=code)
        quick_exits = quick_exits + 1 if time.monotonic() - started < _QUICK_EXIT_SECONDS else 0
        if quick_exits >= _QUICK_EXITS:
            failed = True
            on_signal(signal.SIGTERM, None)
            continue
        if quick_exits:
            time.sleep(min(5.0, 0.2 * 2**quick_exits))  # no restart storm
        if not stopping:
            spawn(index)
    if failed:
        raise StoreUnavailable("workers keep exiting at start: see the log")


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (best effort)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
