"""In-memory AUM store (Tailscale's ``Mem`` chonk)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from tka.aum import AUM

__all__ = ["MemoryStore"]


class MemoryStore:
    """Keeps decoded AUMs in dictionaries; nothing survives the process.

    *clock* returns the current Unix time; it stamps commit times, which
    compaction reads. Thread-safe.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._aums: dict[bytes, AUM] = {}
        self._times: dict[bytes, float] = {}
        self._children: dict[bytes, list[bytes]] = {}
        self._ancestor: bytes | None = None

    def get(self, aum_hash: bytes) -> AUM | None:
        """The stored AUM with this hash, or ``None``."""
        return self._aums.get(aum_hash)

    def children(self, aum_hash: bytes) -> list[AUM]:
        """Stored AUMs whose parent is *aum_hash*."""
        with self._lock:
            return [self._aums[h] for h in self._children.get(aum_hash, ())]

    def heads(self) -> list[AUM]:
        """Stored AUMs with no stored child."""
        with self._lock:
            return [a for h, a in self._aums.items() if not self._children.get(h)]

    def commit_verified(self, aums: Sequence[AUM]) -> None:
        """Store verified AUMs (atomically: a dictionary update cannot half-fail)."""
        with self._lock:
            now = self._clock()
            for aum in aums:
                h = aum.hash
                if h in self._aums:
                    # Go re-stamps the commit time of a re-committed AUM.
                    self._times[h] = now
                    continue
                self._aums[h] = aum
                self._times[h] = now
                parent = aum.parent
                if parent is not None:
                    self._children.setdefault(parent, []).append(h)

    def last_active_ancestor(self) -> bytes | None:
        """The stored hint, or ``None``."""
        return self._ancestor

    def set_last_active_ancestor(self, aum_hash: bytes) -> None:
        """Record the hint."""
        self._ancestor = bytes(aum_hash)

    def all_hashes(self) -> list[bytes]:
        """Hashes of every stored AUM."""
        with self._lock:
            return list(self._aums)

    def commit_time(self, aum_hash: bytes) -> float | None:
        """Unix time of the AUM's commit, or ``None``."""
        return self._times.get(aum_hash)

    def purge(self, hashes: Sequence[bytes]) -> None:
        """Forget these AUMs."""
        with self._lock:
            for h in hashes:
                aum = self._aums.pop(h, None)
                self._times.pop(h, None)
                if aum is None:
                    continue
                parent = aum.parent
                if parent is not None and parent in self._children:
                    kids = [k for k in self._children[parent] if k != h]
                    if kids:
                        self._children[parent] = kids
                    else:
                        del self._children[parent]
