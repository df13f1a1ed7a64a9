"""The accept loop: admission at accept time, and no stall when descriptors run out.

asyncio's own accept loop (``loop.create_server``, which uvicorn uses)
hands every connection to the protocol, so a cap can only act after the
connection holds a descriptor and a protocol object; and when ``accept()``
fails for want of descriptors (``EMFILE``) it logs a traceback and stops
accepting for a second, while the kernel's queue fills behind it. This
loop, on the same listening socket:

* accepts at most *batch* connections per wake-up, so the event loop
  reads the requests of connections already accepted in between;
* asks the :class:`~tka_server.connections.ConnectionGuard` about each
  one at once: one over its address's cap, or arriving when every
  connection is busy, gets a fixed 503 and is closed before asyncio ever
  sees it; at the global cap the oldest idle connection makes room;
* builds nothing for an admitted connection until its first byte arrives
  (a reader on the descriptor; no transport, protocol or task), and closes
  it if none comes within *first_byte_timeout* (a sweep every
  *sweep_every* seconds over the waiting connections, oldest first), so
  idle connections cost next to nothing to hold or to evict;
* on ``EMFILE``/``ENFILE`` (descriptors used outside the cap, e.g. by the
  store) closes idle connections, oldest first, and tries again on the next
  turn of the loop, once their descriptors are back; with nothing idle to
  close it sheds the waiting connections one by one through a reserve
  descriptor (closed, ``accept()``, the new socket closed, reopened), the
  classic trick of nginx and libuv users; when even that fails it pauses
  accepting for *pause* seconds, so it never spins;
* hands a connection with data to asyncio with the public
  ``loop.connect_accepted_socket`` (TLS included).

Events are counted on the guard (``shed``, ``accept_paused``, ...) for the
periodic summary line, never logged one by one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import ssl
from collections.abc import Callable
from typing import Final

from .connections import ConnectionGuard, Slot

__all__ = ["BUSY_RESPONSE", "Listener"]

_OUT_OF_DESCRIPTORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_BUSY_BODY: Final = b'{"error":"too many connections","code":"too_many_connections"}\n'
BUSY_RESPONSE: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n"
    b"\r\n%s"
) % (len(_BUSY_BODY), _BUSY_BODY)
"""Sent, best effort, to a connection refused at accept."""


class Listener:
    """Accept connections on *sock* for *guard*, making protocols with *make_protocol*."""

    def __init__(
        self,
        sock: socket.socket,
        guard: ConnectionGuard,
        make_protocol: Callable[[Slot], asyncio.Protocol],
        *,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
        first_byte_timeout: float = 5.0,
        sweep_every: float = 0.25,
        batch: int = 64,
        pause: float = 0.1,
        evict_on_shortage: int = 16,
    ) -> None:
        self.sock = sock
        self.guard = guard
        self.make_protocol = make_protocol
        self.ssl_context = ssl_context
        self.handshake_timeout = handshake_timeout
        self.first_byte_timeout = first_byte_timeout
        self.sweep_every = sweep_every
        self.batch = batch
        self.pause = pause
        self.evict_on_shortage = evict_on_shortage
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reading = False
        self._closed = False
        self._reserve: int | None = None
        self._resume_handle: asyncio.Handle | None = None
        self._pending: set[asyncio.Task[object]] = set()
        # Connections accepted that have sent nothing yet, oldest first.
        self._waiting: dict[Slot, tuple[socket.socket, float]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start accepting on the running *loop*."""
        self._loop = loop
        self.sock.setblocking(False)
        self._reserve = _open_reserve()
        self._resume()

    def close(self) -> None:
        """Stop accepting (the socket itself is closed by its owner)."""
        self._closed = True
        self._stop_reading()
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for slot, (conn, _) in list(self._waiting.items()):
            self._drop_waiting(slot, conn)
        if self._reserve is not None:
            os.close(self._reserve)
            self._reserve = None

    def _resume(self) -> None:
        self._resume_handle = None
        if self._closed or self._reading or self._loop is None:
            return
        self._loop.add_reader(self.sock.fileno(), self._on_readable)
        self._reading = True

    def _stop_reading(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.sock.fileno())
            self._reading = False

    def _retry_later(self, delay: float | None) -> None:
        """Stop reading; read again on the next turn (None) or after *delay* seconds."""
        self._stop_reading()
        if self._resume_handle is not None or self._loop is None:
            return
        if delay is None:
            self._resume_handle = self._loop.call_soon(self._resume)
        else:
            self._resume_handle = self._loop.call_later(delay, self._resume)

    # -- accepting -----------------------------------------------------------------------

    def _on_readable(self) -> None:
        for _ in range(self.batch):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_DESCRIPTORS:
                    self._out_of_descriptors()
                else:
                    # Unexpected (e.g. EPROTO, ENETDOWN): count it, and do not spin.
                    self.guard.note("accept_error")
                    self._retry_later(self.pause)
                return
            self._admit(conn, addr)

    def _admit(self, conn: socket.socket, addr: object) -> None:
        host = addr[0] if isinstance(addr, tuple) and addr else ""
        slot = self.guard.admit(str(host))
        if slot is None:
            _refuse(conn)
            return
        conn.setblocking(False)
        # Nothing is built for a connection until its first byte: a reader on
        # its descriptor, nothing more. An idle flood then costs an accept()
        # and a dict entry per connection, and closing one (evicted, or past
        # its first-byte deadline) is synchronous and gives its descriptor
        # back at once.
        assert self._loop is not None
        slot.since = self._loop.time()
        self._loop.add_reader(conn.fileno(), self._first_data, slot, conn)
        self._waiting[slot] = (conn, slot.since)

        def close_waiting() -> None:
            self._drop_waiting(slot, conn)

        slot.closer = close_waiting
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(self.sweep_every, self._sweep)

    def _drop_waiting(self, slot: Slot, conn: socket.socket) -> None:
        if self._waiting.pop(slot, None) is not None and self._loop is not None:
            self._loop.remove_reader(conn.fileno())
            conn.close()
        self.guard.release(slot)

    def _sweep(self) -> None:
        """Close connections that sent nothing within *first_byte_timeout*, oldest first."""
        self._sweeper = None
        if self._loop is None:
            return
        too_old = self._loop.time() - self.first_byte_timeout
        for slot, (conn, since) in list(self._waiting.items()):
            if since > too_old:
                break
            self.guard.note("first_byte_timeout")
            self._drop_waiting(slot, conn)
        if self._waiting and not self._closed:
            self._sweeper = self._loop.call_later(self.sweep_every, self._sweep)

    def _first_data(self, slot: Slot, conn: socket.socket) -> None:
        """The first byte is here (or the peer closed): hand the socket to asyncio."""
        assert self._loop is not None
        self._waiting.pop(slot, None)
        self._loop.remove_reader(conn.fileno())
        protocol = self.make_protocol(slot)
        task: asyncio.Task[object] = self._loop.create_task(
            self._loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self.ssl_context,
                ssl_handshake_timeout=self.handshake_timeout if self.ssl_context else None,
            )
        )
        self._pending.add(task)

        def done(t: asyncio.Task[object]) -> None:
            self._pending.discard(t)
            if t.cancelled() or t.exception() is not None:
                # Never connected (evicted first, failed TLS handshake, ...).
                conn.close()
                self.guard.release(slot)

        def cancel() -> None:
            task.cancel()

        task.add_done_callback(done)
        slot.closer = cancel  # until the protocol has its transport (then transport.abort)

    def _out_of_descriptors(self) -> None:
        self.guard.note("descriptor_shortage")
        # Idle connections first: their descriptors are back once asyncio has
        # finished closing them, on the next turn of the loop.
        if self.guard.evict_idle(self.evict_on_shortage):
            self._retry_later(None)
            return
        # Nothing idle: shed waiting connections through the reserve descriptor.
        for _ in range(self.batch):
            if self._reserve is None:
                self._reserve = _open_reserve()
                if self._reserve is None:
                    break
            os.close(self._reserve)
            self._reserve = None
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                self._reserve = _open_reserve()
                return
            except OSError:
                self._reserve = _open_reserve()
                break
            _refuse(conn)
            self.guard.note("shed")
            self._reserve = _open_reserve()
        else:
            return  # a full batch shed: carry on when the loop comes back
        self.guard.note("accept_paused")
        self._retry_later(self.pause)


def _refuse(conn: socket.socket) -> None:
    """A best-effort 503, then close."""
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send(BUSY_RESPONSE)
    conn.close()


def _open_reserve() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
