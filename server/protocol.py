"""uvicorn's h11 protocol plus request-head deadlines and connection tracking.

uvicorn (h11) parses HTTP/1.1, bounds a request head's size
(``h11_max_incomplete_event_size``) and closes idle kept-alive connections
(``timeout_keep_alive``), but cancels that timer on the first byte and has
no timer for the request head at all: a client sending a byte a second, or
nothing, would hold its connection until the server runs out of
descriptors. The subclass adds:

* a **first-byte deadline** (*first_byte_timeout*) on a new connection:
  nothing received by then, it is closed;
* a **head deadline** (*header_timeout*): the whole request head must
  arrive within that long of the connection opening, or of the previous
  answer on a kept-alive connection;
* reports to the :class:`~tka_server.connections.ConnectionGuard`: idle
  (no request in progress, may be evicted when the service is full) from
  connect and after each answer, busy from a complete request head on;
  released when the connection is lost. Eviction aborts the transport.

A connection cut off by a deadline is counted (``first_byte_timeout``,
``header_timeout``) for the periodic ``connections`` log line, not logged
on its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .connections import ConnectionGuard, Slot

__all__ = ["GuardedH11Protocol", "guarded_protocol_class"]


class GuardedH11Protocol(H11Protocol):
    """See the module docstring; configured by :func:`guarded_protocol_class`."""

    guard: ConnectionGuard
    first_byte_timeout: float = 5.0
    header_timeout: float = 10.0

    slot: Slot | None = None
    """Set by the accept loop right after the protocol is made."""
    _head_timer: asyncio.TimerHandle | None = None
    _awaiting_first_byte = False
    _waiting_since = 0.0

    # -- deadlines -----------------------------------------------------------------------

    def _arm(self, delay: float, what: str) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(max(delay, 0.0), self._too_slow, what)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self, what: str) -> None:
        self._head_timer = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.guard.note(what)
            self.transport.abort()

    def _waiting_for_head(self, first: bool) -> None:
        """No request in progress from now on: deadlines armed, evictable.

        A new connection's deadlines count from when it was accepted.
        """
        now = self.loop.time()
        since = self.slot.since if first and self.slot is not None else now
        self._waiting_since = min(since, now)
        self._awaiting_first_byte = first
        if first and self.first_byte_timeout < self.header_timeout:
            self._arm(self._waiting_since + self.first_byte_timeout - now, "first_byte_timeout")
        else:
            self._arm(self._waiting_since + self.header_timeout - now, "header_timeout")
        if self.slot is not None:
            self.guard.set_idle(self.slot)

    # -- uvicorn's protocol hooks --------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if self.slot is not None:
            self.slot.closer = transport.abort
        self._waiting_for_head(first=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.slot is not None:
            self.guard.release(self.slot)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_first_byte:
            # The first byte came: the rest of the head is due header_timeout
            # after the connection opened.
            self._awaiting_first_byte = False
            left = self._waiting_since + self.header_timeout - self.loop.time()
            self._arm(max(left, 0.0), "header_timeout")
        super().data_received(data)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and not self.cycle.response_complete:
            # A whole request head arrived: no deadline on it now (the
            # application times the body), and not evictable.
            self._disarm()
            self._awaiting_first_byte = False
            if self.slot is not None:
                self.guard.set_busy(self.slot)

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            # The next head must come in time too (uvicorn's keep-alive
            # timer, armed by super(), closes the connection if it does not
            # start within timeout_keep_alive).
            self._waiting_for_head(first=False)
        super().on_response_complete()


def guarded_protocol_class(
    guard: ConnectionGuard, first_byte_timeout: float, header_timeout: float
) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` subclass bound to *guard* and these deadlines."""
    return type(
        "TkaH11Protocol",
        (GuardedH11Protocol,),
        {
            "guard": guard,
            "first_byte_timeout": first_byte_timeout,
            "header_timeout": header_timeout,
        },
    )
