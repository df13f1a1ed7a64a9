"""The single-head shortcut of compute_active_chain changes nothing but speed.

With exactly one head, ``compute_active_chain`` walks forward along the path
it walked back, without ``children`` lookups (see ``chain._single_path``).
These tests build random AUM trees -- forks, orphans, missing parents, a
last-active-ancestor hint or none -- and check the result (or the error) is
the same as with every lookup going to the store.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tka import chain
from tka.aum import AUM, AUMKind, Signature
from tka.errors import TKAError
from tka.key import Key
from tka.state import State
from tka.storage.memory import MemoryStore

KEYS = tuple(Key.ed25519(bytes([i + 1]) * 32, votes=i + 1) for i in range(3))
GENESIS = AUM(
    AUMKind.CHECKPOINT,
    state=State(None, (bytes(32),), KEYS, 1, 2),
    signatures=(Signature(KEYS[0].public, bytes(64)),),
)


@st.composite
def trees(draw: Any) -> tuple[list[AUM], list[bool], int | None]:
    aums = [GENESIS]
    for i in range(draw(st.integers(0, 25))):
        # Mostly extend the newest AUM, sometimes fork from an older one.
        fork = draw(st.integers(0, 3)) == 0
        parent = draw(st.sampled_from(aums)) if fork else aums[-1]
        signers = draw(st.lists(st.sampled_from(KEYS), max_size=2))
        kind = draw(st.sampled_from([AUMKind.NO_OP, AUMKind.NO_OP, AUMKind.REMOVE_KEY, 77]))
        aums.append(
            AUM(
                int(kind),
                prev_aum_hash=parent.hash,
                key_id=KEYS[2].public if kind == AUMKind.REMOVE_KEY else bytes([i]),
                signatures=tuple(Signature(k.public, bytes(64)) for k in signers) or None,
            )
        )
    # Some AUMs are not stored (missing parents, orphaned branches).
    stored = [True] + [draw(st.integers(0, 9)) > 0 for _ in aums[1:]]
    hint = draw(st.one_of(st.none(), st.integers(0, len(aums) - 1)))
    return aums, stored, hint


def _outcome(store: MemoryStore, hint: bytes | None) -> Any:
    try:
        c = chain.compute_active_chain(store, hint)
    except TKAError as exc:
        return ("error", type(exc).__name__, str(exc))
    return (c.oldest.hash, c.head.hash, c.state)


@settings(
    max_examples=400,
    # monkeypatch is only used through a fresh context per example.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(tree=trees())
def test_shortcut_agrees_with_store_lookups(
    tree: tuple[list[AUM], list[bool], int | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    aums, stored, hint_index = tree
    store = MemoryStore()
    store.commit_verified([a for a, keep in zip(aums, stored, strict=True) if keep])
    hint = None if hint_index is None else aums[hint_index].hash
    fast = _outcome(store, hint)
    with monkeypatch.context() as m:
        # Without the shortcut, every children() goes to the store and the
        # walk forward chooses among them at every step.
        m.setattr(chain, "_single_path", lambda storage, path: None)
        slow = _outcome(store, hint)
    assert fast == slow


def test_shortcut_is_taken_for_a_linear_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    aums = [GENESIS]
    for i in range(5):
        aums.append(AUM(AUMKind.NO_OP, prev_aum_hash=aums[-1].hash, key_id=bytes([i])))
    store.commit_verified(aums)
    calls: list[bytes] = []
    real = store.children

    def counting(h: bytes) -> list[AUM]:
        calls.append(h)
        return real(h)

    monkeypatch.setattr(store, "children", counting)
    c = chain.compute_active_chain(store, GENESIS.hash)
    assert c.head.hash == aums[-1].hash
    assert calls == []  # the forward walk never asked the store
