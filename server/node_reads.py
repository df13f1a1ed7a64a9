"""Authentication reads for the event loop, batched onto one thread.

The hot node RPCs (bootstrap, sync/offer, an empty sync/send, map) are
answered from memory once the caller is authenticated, and authenticating
is one indexed read of the node and its tailnet (or, for a node a front
relays for, of the front token, the fed node and the tailnet). Handing each
request to a worker thread for that read cost more than the rest of the
request: every hop moves the GIL between threads twice, and sixteen worker
threads contending for it multiplied the server's CPU time per request by
three.

:class:`BatchedReads` instead queues the reads the event loop asks for and
lets one thread of its own run whatever has queued up as one statement
(:meth:`~tka.control.store.ControlStore.nodes_with_tailnets`, or
:meth:`~tka.control.store.ControlStore.front_callers`), then wakes the
waiting requests with one callback. Under load a read serves many
requests; idle, it costs one short round trip, as before. The event loop
never waits on the store: a slow database slows these requests only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Final, Generic, TypeVar

from tka.control.service import JoinedRow
from tka.control.store import MAX_JOINED_READ, ControlStore, FrontKey, FrontRow

__all__ = ["BatchedReads", "ReadQueueFull", "front_reads", "node_reads"]

#: Reads allowed to wait before new ones are refused (each is a few hundred
#: bytes; the connection caps bound the callers anyway).
MAX_QUEUED: Final = 50_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadQueueFull(Exception):
    """More reads are waiting than :data:`MAX_QUEUED`: the caller takes the slow path."""


class BatchedReads(Generic[K, V]):
    """Batched reads by key, for coroutines on one event loop.

    *fetch* reads many keys at once (at most :data:`MAX_JOINED_READ`) and
    answers those it found; *missing* is the answer for any other key.
    """

    def __init__(self, fetch: Callable[[Sequence[K]], dict[K, V]], missing: V, name: str) -> None:
        self._fetch = fetch
        self._missing = missing
        self._name = name
        self._cv = threading.Condition()
        self._queue: list[tuple[K, asyncio.Future[V]]] = []
        # Reads asked for in the loop's current pass (touched by the loop only).
        self._gathering: list[tuple[K, asyncio.Future[V]]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the reading thread (call from the event loop the reads will come from)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Let the thread finish what is queued and end."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    async def read(self, key: K) -> V:
        """What *fetch* reads for *key* (*missing* when it found nothing).

        Raises what the store raises (e.g. ``StoreUnavailable``), and
        :class:`ReadQueueFull` when too many reads wait already.
        """
        loop = self._loop
        if loop is None or self._stopping:
            raise ReadQueueFull
        if len(self._gathering) + len(self._queue) >= MAX_QUEUED:
            raise ReadQueueFull
        future: asyncio.Future[V] = loop.create_future()
        self._gathering.append((key, future))
        if len(self._gathering) == 1:
            # Handed over once the loop has run everything ready now, so
            # every request whose bytes came in the same wake-up shares it.
            loop.call_soon(self._hand_over)
        return await future

    def _hand_over(self) -> None:
        gathered, self._gathering = self._gathering, []
        with self._cv:
            self._queue.extend(gathered)
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                batch = self._queue[:MAX_JOINED_READ]
                del self._queue[:MAX_JOINED_READ]
            keys = list(dict.fromkeys(key for key, _ in batch))
            found: dict[K, V] = {}
            error: BaseException | None = None
            try:
                found = self._fetch(keys)
            except BaseException as exc:  # handed to every waiting request
                error = exc
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._settle, batch, found, error)
            except RuntimeError:  # the loop closed: nobody waits any more
                return

    def _settle(
        self,
        batch: list[tuple[K, asyncio.Future[V]]],
        found: dict[K, V],
        error: BaseException | None,
    ) -> None:
        for key, future in batch:
            if future.done():  # the request was cancelled (its client went away)
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(found.get(key, self._missing))


def node_reads(store: ControlStore) -> BatchedReads[int, JoinedRow]:
    """A node token's node and tailnet, by node ID."""

    def fetch(ids: Sequence[int]) -> dict[int, JoinedRow]:
        return dict(store.nodes_with_tailnets(ids))

    return BatchedReads(fetch, (None, None), "tka-node-reads")


def front_reads(store: ControlStore) -> BatchedReads[FrontKey, FrontRow]:
    """A relayed node's front token, fed node and tailnet, by (token ID, tailnet, node ID)."""
    return BatchedReads(store.front_callers, (None, None, None), "tka-front-reads")
