"""Both generations of Tailscale's sync rules, pinned without Go (see ``tka/sync.py``).

The expected offers are written in, derived by reading Go's ``SyncOffer``:

- released (tailscale.com v1.101.0-pre to v1.102.5): ``curs`` starts at the
  head and steps back once per iteration ``i`` (0 to 399). When ``i > 0`` and
  ``i % skip == 0`` (``skip`` 4, then 16, 64, 256) the AUM ``i`` steps back is
  listed, *before* it is looked up; the loop stops when the AUM just looked up
  is the oldest. The oldest is appended last, so a chain whose oldest is
  exactly 4 (16, 64, 256) steps back lists it twice.
- main (f6fa29463, de9ec7ee): every checkpoint met walking back from the head
  (the head included), stopping at the oldest or after 1000 steps, then the
  oldest.

``MissingAUMs`` walks back at most 400 (released) or 1000 (main) steps looking
for the remote head before falling back to the remote's ancestors.
"""

from __future__ import annotations

import pytest

from tka.aum import AUM, AUMKind, Signature
from tka.authority import Authority
from tka.key import Key
from tka.nlkeys import NLPrivate
from tka.state import State
from tka.storage.memory import MemoryStore
from tka.sync import (
    DEFAULT_SYNC_RULES,
    SYNC_RULES_MAIN,
    SYNC_RULES_V1_102,
    NoIntersection,
    SyncOffer,
    SyncRules,
    missing_aums,
    sync_offer,
)

PRIV = NLPrivate.from_seed(b"\x01" * 32)
STATE = State(None, (bytes(32),), (Key(1, 1, PRIV.public().raw),), 1, 2)


def _chain(n: int, checkpoints: set[int]) -> list[AUM]:
    """A0 (the genesis checkpoint) to A(n-1); Ai is a checkpoint for i in *checkpoints*."""
    out: list[AUM] = []
    for i in range(n):
        if i == 0 or i in checkpoints:
            aum = AUM(AUMKind.CHECKPOINT, prev_aum_hash=out[-1].hash if out else None, state=STATE)
        else:
            aum = AUM(AUMKind.NO_OP, prev_aum_hash=out[-1].hash, key_id=i.to_bytes(4, "big"))
        out.append(aum.with_signatures((Signature(PRIV.key_id, PRIV.sign(aum.sig_hash)),)))
    return out


def _open(aums: list[AUM]) -> tuple[Authority, MemoryStore]:
    """The authority of exactly *aums* (oldest first), the oldest named by the hint."""
    store = MemoryStore()
    store.commit_verified(aums)
    store.set_last_active_ancestor(aums[0].hash)
    return Authority.open(store), store


# 30 AUMs, checkpoints A0 (genesis), A10 and A25.
CHAIN = _chain(30, {10, 25})
# 450 AUMs, checkpoints every 50: A0, A50, ..., A400.
LONG = _chain(450, set(range(50, 450, 50)))


def _names(chain: list[AUM], offer: SyncOffer) -> tuple[str, list[str]]:
    index = {a.hash: f"A{i}" for i, a in enumerate(chain)}
    return index[offer.head], [index[h] for h in offer.ancestors]


# (chain, the slice of it that is stored, released ancestors, main ancestors)
OFFERS = [
    # Head A29, oldest A0: released lists i=4 (A25) and i=16 (A13); i=64 is
    # never reached (A0 is met at i=29). Main lists the checkpoints A25, A10.
    ("30 AUMs", CHAIN, slice(0, 30), ["A25", "A13", "A0"], ["A25", "A10", "A0"]),
    # Head A25 is itself a checkpoint: main lists it; released does not.
    ("head is a checkpoint", CHAIN, slice(0, 26), ["A21", "A9", "A0"], ["A25", "A10", "A0"]),
    # The oldest is exactly 4 steps back: released lists it at i=4, before
    # the walk sees it is the oldest, then appends it again.
    ("oldest 4 back", CHAIN, slice(0, 5), ["A0", "A0"], ["A0"]),
    # 16 back: listed at i=4 (A12) and i=16 (A0), then A0 again.
    ("oldest 16 back", CHAIN, slice(0, 17), ["A12", "A0", "A0"], ["A10", "A0"]),
    # Fewer than 4 AUMs behind the head: only the oldest.
    ("oldest 3 back", CHAIN, slice(0, 4), ["A0"], ["A0"]),
    ("genesis only", CHAIN, slice(0, 1), ["A0"], ["A0"]),
    # Compacted to A10 (a checkpoint, now the oldest): main's walk stops at
    # A10 and lists A25; released lists A25, A13, then the oldest.
    ("compacted at A10", CHAIN, slice(10, 30), ["A25", "A13", "A10"], ["A25", "A10"]),
    # 449 AUMs behind the head: released lists A445, A433, A385, A193 (i = 4,
    # 16, 64, 256) and stops after 400 steps without meeting the oldest; main
    # lists every checkpoint (all within 1000 steps).
    (
        "450 AUMs",
        LONG,
        slice(0, 450),
        ["A445", "A433", "A385", "A193", "A0"],
        ["A400", "A350", "A300", "A250", "A200", "A150", "A100", "A50", "A0"],
    ),
]


@pytest.mark.parametrize(
    ("chain", "stored", "released", "main"),
    [pytest.param(c, s, r, m, id=name) for name, c, s, r, m in OFFERS],
)
def test_offers_of_each_generation(
    chain: list[AUM], stored: slice, released: list[str], main: list[str]
) -> None:
    authority, store = _open(chain[stored])
    head = f"A{stored.stop - 1}"
    for rules, want in ((SYNC_RULES_V1_102, released), (SYNC_RULES_MAIN, main)):
        assert _names(chain, sync_offer(authority, store, rules=rules)) == (head, want), rules


def test_the_default_is_the_released_generation() -> None:
    assert DEFAULT_SYNC_RULES is SYNC_RULES_V1_102
    authority, store = _open(CHAIN)
    assert sync_offer(authority, store) == sync_offer(authority, store, rules=SYNC_RULES_V1_102)
    assert (SYNC_RULES_V1_102.offer, SYNC_RULES_V1_102.head_intersection_iter) == ("skip", 400)
    assert (SYNC_RULES_MAIN.offer, SYNC_RULES_MAIN.head_intersection_iter) == ("checkpoints", 1000)


@pytest.mark.parametrize(
    ("remote_head", "released_first", "main_first"),
    [
        # 399 steps from A449 back to A50: both walks find the remote head.
        (50, 51, 51),
        # 400 steps back to A49: past the released walk (i = 0..399 looks at
        # A449..A50), which falls back to the remote's ancestor A0 and so
        # sends A1 onwards; main finds the head and sends A50 onwards.
        (49, 1, 50),
        (10, 1, 11),
    ],
)
def test_head_intersection_cap_of_each_generation(
    remote_head: int, released_first: int, main_first: int
) -> None:
    authority, store = _open(LONG)
    remote = SyncOffer(LONG[remote_head].hash, (LONG[0].hash,))
    for rules, first in ((SYNC_RULES_V1_102, released_first), (SYNC_RULES_MAIN, main_first)):
        got = missing_aums(authority, store, remote, rules=rules)
        assert [a.hash for a in got] == [a.hash for a in LONG[first:]], rules


def _far_behind(rules: SyncRules) -> list[AUM]:
    """What a compacted node far behind (A100..A130, oldest A100) sends back to a
    control plane at A449 whose offer was made under *rules* (what f6fa29463 fixes)."""
    control, control_store = _open(LONG)
    node, node_store = _open(LONG[100:131])
    offer = sync_offer(control, control_store, rules=rules)
    # The node answers with released rules: only the control plane's offer differs.
    return missing_aums(node, node_store, offer, rules=SYNC_RULES_V1_102)


def test_a_far_behind_node_finds_an_intersection_only_in_mains_offer() -> None:
    # Released offer: A445, A433, A385, A193, A0, none of which the node holds.
    with pytest.raises(NoIntersection):
        _far_behind(SYNC_RULES_V1_102)
    # Main's offer lists the checkpoint A100, the node's oldest: the tail
    # intersection is A100 and the node has nothing newer than A130 to send
    # (A101..A130 are on the control plane's chain but the node does not know it).
    sent = _far_behind(SYNC_RULES_MAIN)
    assert [a.hash for a in sent] == [a.hash for a in LONG[101:131]]
