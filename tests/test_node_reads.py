"""server/node_reads.py: the event loop's authentication reads, batched onto one thread."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from server.node_reads import node_reads
from tka.control import wire
from tka.control.errors import StoreUnavailable
from tka.control.service import ControlService
from tka.control.store import ControlStore, open_store
from tka.nlkeys import NodePublic


class _CountingStore:
    """A real SQLite store that counts (and can fail) its batched reads."""

    def __init__(self, store: ControlStore) -> None:
        self.store = store
        self.batches: list[list[int]] = []
        self.fail = False

    def nodes_with_tailnets(self, ids: Any) -> Any:
        self.batches.append(list(ids))
        if self.fail:
            raise StoreUnavailable("sqlite store: reading: disk I/O error")
        return self.store.nodes_with_tailnets(ids)


def _store_with_nodes(tmp_path: Path, n: int) -> tuple[ControlStore, list[int]]:
    store = open_store(f"sqlite:///{tmp_path}/c.db")
    svc = ControlService(store)
    svc.create_tailnet("t")
    ids = []
    for i in range(n):
        req = wire.AdminRegisterRequest(NodePublic(os.urandom(32)), b"", b"", f"n{i}")
        ids.append(int(svc.register_node("t", req)["NodeID"]))
    return store, ids


def _read_all(store: _CountingStore, ids: list[int]) -> list[Any]:
    """Every ID read at once, from one event loop; answers or exceptions, in order."""

    async def main() -> list[Any]:
        reads = node_reads(store)  # type: ignore[arg-type]
        reads.start()
        try:
            return await asyncio.gather(*(reads.read(i) for i in ids), return_exceptions=True)
        finally:
            reads.stop()

    return asyncio.run(main())


def test_reads_made_together_share_one_statement(tmp_path: Path) -> None:
    store, ids = _store_with_nodes(tmp_path, 40)
    counting = _CountingStore(store)

    try:
        got = _read_all(counting, [*ids, 10**12])
    finally:
        store.close()
    # Each answer is its own node with its tailnet; an unknown ID gets (None, None).
    for node_id, (node, tailnet) in zip(ids, got, strict=False):
        assert node.node_id == node_id and tailnet.name == "t"
    assert got[-1] == (None, None)
    assert len(counting.batches) == 1 and sorted(counting.batches[0]) == sorted([*ids, 10**12])


def test_a_failed_read_fails_every_request_waiting_on_it(tmp_path: Path) -> None:
    store, ids = _store_with_nodes(tmp_path, 5)
    counting = _CountingStore(store)
    counting.fail = True

    try:
        got = _read_all(counting, ids)
    finally:
        store.close()
    assert all(isinstance(g, StoreUnavailable) for g in got)


def test_a_cancelled_request_does_not_disturb_the_others(tmp_path: Path) -> None:
    store, ids = _store_with_nodes(tmp_path, 3)

    async def main() -> Any:
        reads = node_reads(store)
        reads.start()
        try:
            doomed = asyncio.ensure_future(reads.read(ids[0]))
            kept = asyncio.ensure_future(reads.read(ids[1]))
            await asyncio.sleep(0)
            doomed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await doomed
            return await kept
        finally:
            reads.stop()

    try:
        node, _ = asyncio.run(main())
    finally:
        store.close()
    assert node.node_id == ids[1]
