"""Who holds the service's connections: per-address and global caps, idle eviction.

Pure bookkeeping, no I/O: :class:`ConnectionGuard` decides whether an
accepted connection may stay (:meth:`~ConnectionGuard.admit`), remembers
which connections are *idle* (no request in progress: nothing received yet,
a request head still arriving, or kept alive between requests), and, when
the service is full, closes the connection that has been idle longest to
make room for the new one. The accept loop (:mod:`tka_server.listener`)
and the HTTP protocol (:mod:`tka_server.protocol`) report to it.

Why this shape: a connection costs the server a file descriptor whether or
not it ever sends a request, so a cap on connections that one address can
fill, or that idle sockets can hold, is a cap an attacker holds. Here

* one address (an IPv6 /64) holds at most *per_address* connections (a trusted proxy is
  not counted by its own address: its requests count against the address
  it forwards, see :mod:`tka_server.forwarded`);
* at *max_connections*, a new connection replaces the oldest idle one, so
  idle and half-open sockets can delay an honest client by at most one
  pass of the accept loop; only when every connection is busy with a
  request is the new one refused.

Counters (refused, evicted, timeouts, descriptor shortages) are kept for
the periodic ``connections`` log line rather than logged one by one.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

__all__ = ["ConnectionGuard", "Slot", "address_key"]

_Closer = Callable[[], None]


def address_key(host: str) -> str:
    """What *host* counts as: itself, its IPv4 form if IPv4-mapped, or its IPv6 /64.

    One host is usually given a whole IPv6 /64, so counting single IPv6
    addresses would let it open as many connections as it likes.
    """
    if ":" not in host:
        return host
    try:
        ip = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


class Slot:
    """One admitted connection: the address it counts against and how to close it."""

    __slots__ = ("closer", "key", "released", "since")

    def __init__(self, key: str | None) -> None:
        self.since = time.monotonic()
        """When it was accepted (the accept loop sets it on the event loop's clock)."""
        self.key: Final = key
        """Address this connection counts against; None for a trusted proxy."""
        self.closer: _Closer | None = None
        """Closes the connection at once (set by whoever owns its socket now)."""
        self.released = False


class ConnectionGuard:
    """Admission, idle tracking and eviction for *max_connections* connections."""

    def __init__(
        self,
        max_connections: int,
        per_address: int,
        is_trusted: Callable[[str], bool] = lambda _host: False,
    ) -> None:
        if max_connections < 1 or per_address < 1:
            raise ValueError("connection caps must be at least 1")
        self.max_connections = max_connections
        self.per_address = per_address
        self._is_trusted = is_trusted
        self._open = 0
        self._per_key: Counter[str] = Counter()
        # Idle connections, oldest first (dicts keep insertion order).
        self._idle: dict[Slot, None] = {}
        self.stats: Counter[str] = Counter()
        """Events since the last :meth:`take_stats` (refused, evicted, timeouts, ...)."""
        self._stats_since = time.monotonic()

    # -- state ---------------------------------------------------------------------------

    @property
    def open(self) -> int:
        """Connections admitted and not yet released."""
        return self._open

    @property
    def idle(self) -> int:
        """Of those, how many have no request in progress."""
        return len(self._idle)

    def count(self, address: str) -> int:
        """Connections and forwarded requests counted against *address*."""
        return self._per_key[address_key(address)]

    # -- connections ---------------------------------------------------------------------

    def admit(self, peer: str) -> Slot | None:
        """A slot for a new connection from *peer*, idle; None when it must be refused.

        Refused when *peer* already holds *per_address* connections, or when
        the service is full and no connection is idle. When full, the
        oldest idle connection is closed to make room.
        """
        key = None if self._is_trusted(peer) else address_key(peer)
        if key is not None and self._per_key[key] >= self.per_address:
            self.stats["refused_per_address"] += 1
            return None
        if self._open >= self.max_connections and not self.evict_idle(1):
            self.stats["refused_full"] += 1
            return None
        slot = Slot(key)
        self._open += 1
        if key is not None:
            self._per_key[key] += 1
        self._idle[slot] = None
        return slot

    def set_idle(self, slot: Slot) -> None:
        """*slot* has no request in progress (again): it may be evicted, oldest first."""
        if not slot.released:
            self._idle.pop(slot, None)
            self._idle[slot] = None

    def set_busy(self, slot: Slot) -> None:
        """*slot* is serving a request: it is not evicted."""
        self._idle.pop(slot, None)

    def release(self, slot: Slot) -> None:
        """*slot*'s connection is gone (idempotent)."""
        if slot.released:
            return
        slot.released = True
        self._idle.pop(slot, None)
        self._open -= 1
        if slot.key is not None:
            self._drop_key(slot.key)

    def evict_idle(self, n: int) -> int:
        """Close up to *n* idle connections, oldest first; how many."""
        done = 0
        while done < n and self._idle:
            slot = next(iter(self._idle))
            closer = slot.closer
            self.release(slot)
            if closer is not None:
                closer()
            done += 1
        self.stats["evicted"] += done
        return done

    # -- requests forwarded by a trusted proxy -------------------------------------------

    def acquire_forwarded(self, address: str) -> bool:
        """Count a proxied request from *address*; False (not counted) at its cap."""
        address = address_key(address)
        if self._per_key[address] >= self.per_address:
            self.stats["refused_forwarded"] += 1
            return False
        self._per_key[address] += 1
        return True

    def release_forwarded(self, address: str) -> None:
        """A proxied request counted by :meth:`acquire_forwarded` is over."""
        self._drop_key(address_key(address))

    def _drop_key(self, key: str) -> None:
        left = self._per_key[key] - 1
        if left > 0:
            self._per_key[key] = left
        else:
            del self._per_key[key]

    # -- reporting -----------------------------------------------------------------------

    def note(self, event: str, n: int = 1) -> None:
        """Count an event for the next summary (e.g. ``header_timeout``)."""
        self.stats[event] += n

    def take_stats(self) -> tuple[float, dict[str, int]]:
        """(seconds covered, counts) since the last call, and reset them."""
        now = time.monotonic()
        out = {k: v for k, v in self.stats.items() if v}
        seconds = now - self._stats_since
        self.stats.clear()
        self._stats_since = now
        return seconds, out
