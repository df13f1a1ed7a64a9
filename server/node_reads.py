"""Authentication reads for the event loop, batched onto one thread.

The hot node RPCs (bootstrap, sync/offer, an empty sync/send, map) are
answered from memory once the caller is authenticated, and authenticating
is one indexed read of the node and its tailnet. Handing each request to a
worker thread for that read cost more than the rest of the request: every
hop moves the GIL between threads twice, and sixteen worker threads
contending for it multiplied the server's CPU time per request by three.

:class:`NodeReads` instead queues the reads the event loop asks for and
lets one thread of its own run whatever has queued up as one statement
(:meth:`~tka.control.store.ControlStore.nodes_with_tailnets`), then wakes
the waiting requests with one callback. Under load a read serves many
requests; idle, it costs one short round trip, as before. The event loop
never waits on the store: a slow database slows these requests only.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Final

from tka.control.service import JoinedRow
from tka.control.store import MAX_JOINED_READ, ControlStore

__all__ = ["NodeReads"]

#: Reads allowed to wait before new ones are refused (each is a few hundred
#: bytes; the connection caps bound the callers anyway).
MAX_QUEUED: Final = 50_000


class ReadQueueFull(Exception):
    """More reads are waiting than :data:`MAX_QUEUED`: the caller takes the slow path."""


class NodeReads:
    """Batched reads of (node, tailnet) by node ID, for coroutines on one event loop."""

    def __init__(self, store: ControlStore) -> None:
        self._store = store
        self._cv = threading.Condition()
        self._queue: list[tuple[int, asyncio.Future[JoinedRow]]] = []
        # Reads asked for in the loop's current pass (touched by the loop only).
        self._gathering: list[tuple[int, asyncio.Future[JoinedRow]]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the reading thread (call from the event loop the reads will come from)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="tka-node-reads", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Let the thread finish what is queued and end."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    async def read(self, node_id: int) -> JoinedRow:
        """The node *node_id* and its tailnet (``None`` where there is none).

        Raises what the store raises (e.g. ``StoreUnavailable``), and
        :class:`ReadQueueFull` when too many reads wait already.
        """
        loop = self._loop
        if loop is None or self._stopping:
            raise ReadQueueFull
        if len(self._gathering) + len(self._queue) >= MAX_QUEUED:
            raise ReadQueueFull
        future: asyncio.Future[JoinedRow] = loop.create_future()
        self._gathering.append((node_id, future))
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
            ids = sorted({node_id for node_id, _ in batch})
            rows: dict[int, JoinedRow] = {}
            error: BaseException | None = None
            try:
                rows.update(self._store.nodes_with_tailnets(ids))
            except BaseException as exc:  # handed to every waiting request
                error = exc
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(_settle, batch, rows, error)
            except RuntimeError:  # the loop closed: nobody waits any more
                return


def _settle(
    batch: list[tuple[int, asyncio.Future[JoinedRow]]],
    rows: dict[int, JoinedRow],
    error: BaseException | None,
) -> None:
    for node_id, future in batch:
        if future.done():  # the request was cancelled (its client went away)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(rows.get(node_id, (None, None)))
