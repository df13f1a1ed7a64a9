"""Property tests of the engine: simulated nodes that fork and sync converge on one head."""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tka import ed25519
from tka.aum import AUM
from tka.authority import Authority, Signer
from tka.builder import UpdateBuilder
from tka.disablement import disablement_kdf
from tka.errors import TKAError
from tka.key import Key
from tka.state import State
from tka.storage.memory import MemoryStore
from tka.sync import missing_aums, sync_offer

SEEDS = [bytes([i + 1]) * 32 for i in range(4)]
PUBS = [ed25519.public_from_seed(s) for s in SEEDS]
EXTRA = [bytes([0x80 + i]) * 32 for i in range(6)]  # keys that come and go


@dataclass
class Node:
    store: MemoryStore
    authority: Authority


def _genesis() -> AUM:
    state = State(
        disablement_values=(disablement_kdf(b"secret"),),
        keys=tuple(Key.ed25519(p, votes=1 + i) for i, p in enumerate(PUBS[:3])),
        state_id1=7,
        state_id2=9,
    )
    store = MemoryStore()
    _, genesis = Authority.create(store, state, Signer((SEEDS[0],)))
    return genesis


GENESIS = _genesis()


def _node() -> Node:
    store = MemoryStore()
    return Node(store, Authority.bootstrap(store, GENESIS))


def _update(node: Node, signer: int, op: int, target: int) -> None:
    """Try one builder operation; operations that do not apply are skipped."""
    seed = SEEDS[signer]
    if not node.authority.key_trusted(PUBS[signer]):
        return
    b = UpdateBuilder(node.authority, Signer((seed,)))
    try:
        if op == 0:
            b.add_key(Key.ed25519(ed25519.public_from_seed(EXTRA[target]), votes=1 + target))
        elif op == 1:
            b.remove_key(ed25519.public_from_seed(EXTRA[target]))
        elif op == 2:
            b.set_key_vote(PUBS[target % 3], 1 + target)
        else:
            b.set_key_meta(PUBS[target % 3], {"n": str(target)})
        node.authority.inform(node.store, b.finalize(node.store))
    except TKAError:
        return


def _send(src: Node, dst: Node) -> None:
    """One direction of a sync: src sends what dst's offer says it lacks."""
    aums = missing_aums(src.authority, src.store, sync_offer(dst.authority, dst.store))
    if aums:
        # Over the wire: serialized, decoded again by the receiver.
        dst.authority.inform(dst.store, [AUM.from_bytes(a.to_bytes()) for a in aums])


actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("update"),
            st.integers(0, 2),
            st.integers(0, 3),
            st.integers(0, 3),
            st.integers(0, 5),
        ),
        st.tuples(st.just("send"), st.integers(0, 2), st.integers(0, 2)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions)
def test_nodes_that_fork_and_sync_converge_to_one_head(plan: list[tuple[object, ...]]) -> None:
    nodes = [_node() for _ in range(3)]
    for action in plan:
        if action[0] == "update":
            _, n, signer, op, target = action
            assert isinstance(n, int) and isinstance(signer, int)
            assert isinstance(op, int) and isinstance(target, int)
            _update(nodes[n], signer, op, target)
        else:
            _, a, b = action
            assert isinstance(a, int) and isinstance(b, int)
            if a != b:
                _send(nodes[a], nodes[b])
    # Full exchange, every pair, both ways, until nothing changes.
    for _ in range(4):
        for a in nodes:
            for b in nodes:
                if a is not b:
                    _send(a, b)
    heads = {n.authority.head_hash for n in nodes}
    assert len(heads) == 1
    states = {repr(n.authority.state.to_cbor_obj()) for n in nodes}
    assert len(states) == 1
    # Every node's store reopens to the same head.
    for n in nodes:
        assert Authority.open(n.store).head_hash in heads


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions, st.randoms(use_true_random=False))
def test_the_same_aums_in_any_order_give_the_same_head(
    plan: list[tuple[object, ...]], rnd: random.Random
) -> None:
    nodes = [_node() for _ in range(3)]
    for action in plan:
        if action[0] == "update":
            _, n, signer, op, target = action
            assert isinstance(n, int) and isinstance(signer, int)
            assert isinstance(op, int) and isinstance(target, int)
            _update(nodes[n], signer, op, target)
    # Gather every AUM any node made.
    everything: dict[bytes, AUM] = {}
    for n in nodes:
        for h in n.store.all_hashes():
            aum = n.store.get(h)
            assert aum is not None
            everything[h] = aum
    heads = set()
    for _ in range(3):
        order = list(everything.values())
        rnd.shuffle(order)
        # Stored in any order, Open picks the same head.
        store = MemoryStore()
        for aum in order:
            store.commit_verified([aum])
        store.set_last_active_ancestor(GENESIS.hash)
        heads.add(Authority.open(store).head_hash)
        # Informed one at a time in any order (retrying those whose parent
        # has not arrived yet), a node reaches that head too.
        node = _node()
        pending = [a for a in order if a.hash != GENESIS.hash]
        while pending:
            progress = []
            for aum in pending:
                try:
                    node.authority.inform(node.store, [aum])
                except TKAError:
                    continue
                progress.append(aum)
            assert progress, "some AUM could never be informed"
            pending = [a for a in pending if a not in progress]
        heads.add(node.authority.head_hash)
    assert len(heads) == 1
