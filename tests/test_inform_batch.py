"""Authority.inform runs its signature checks together (and in parallel): same verdicts.

``inform`` puts every Ed25519 check of a batch off until the other checks of
the batch are done, then runs them on several threads. These tests corrupt
random updates of a real batch in different ways and check that the error
(type and message) is exactly the one the straightforward, one-update-at-a-
time procedure gives, and that a good batch is accepted with the same head.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tka import authority as authority_module
from tka import ed25519
from tka.aum import AUM, Signature
from tka.authority import Authority, Signer, verify_aum
from tka.builder import UpdateBuilder
from tka.chain import compute_state_at
from tka.errors import StateError, TKAError, VerificationError
from tka.key import Key
from tka.state import State
from tka.storage.memory import MemoryStore

SEEDS = [bytes([i + 1]) * 32 for i in range(3)]
PUBS = [ed25519.public_from_seed(s) for s in SEEDS]
OUTSIDER = ed25519.public_from_seed(bytes([9]) * 32)


def _base() -> tuple[AUM, list[AUM]]:
    """A genesis and a batch of 40 updates extending it."""
    store = MemoryStore()
    state = State(None, (bytes(32),), tuple(Key.ed25519(p) for p in PUBS), 3, 4)
    authority, genesis = Authority.create(store, state, Signer((SEEDS[0],)))
    batch: list[AUM] = []
    for i in range(40):
        b = UpdateBuilder(authority, Signer((SEEDS[i % 2],)))
        b.set_key_vote(PUBS[2], 1 + i % 5)
        aums = b.finalize(store)
        authority.inform(store, aums)
        batch += aums
    return genesis, batch


GENESIS, BATCH = _base()


def _reference_inform(genesis: AUM, updates: list[AUM]) -> tuple[str, str] | bytes:
    """The one-at-a-time procedure (Tailscale's order): error, or the new head's hash."""
    store = MemoryStore()
    authority = Authority.bootstrap(store, genesis)
    state_at = {authority.head_hash: authority.state}
    try:
        for i, update in enumerate(updates):
            if store.get(update.hash) is not None:
                continue
            parent = update.parent
            if parent is None:
                raise VerificationError(f"update {i}: missing parent")
            state = state_at.get(parent)
            if state is None:
                try:
                    state = compute_state_at(store, parent)
                except TKAError as exc:
                    raise type(exc)(f"update {i} computing state: {exc}") from None
                state_at[parent] = state
            try:
                verify_aum(update, state)
            except VerificationError as exc:
                raise VerificationError(f"update {i} invalid: {exc}") from None
            try:
                state_at[update.hash] = state.apply(update)
            except StateError as exc:
                raise StateError(f"update {i} cannot be applied: {exc}") from None
    except TKAError as exc:
        return type(exc).__name__, str(exc)
    return updates[-1].hash


def _inform(genesis: AUM, updates: list[AUM]) -> tuple[str, str] | bytes:
    store = MemoryStore()
    authority = Authority.bootstrap(store, genesis)
    try:
        authority.inform(store, updates)
    except TKAError as exc:
        return type(exc).__name__, str(exc)
    return authority.head_hash


def _corrupt(aum: AUM, how: int) -> AUM:
    sigs = aum.signatures or (Signature(PUBS[0], bytes(64)),)
    if how == 0:  # a bad signature (crypto failure)
        s = sigs[0]
        bad = bytes([s.signature[0] ^ 1]) + s.signature[1:] if s.signature else bytes(64)
        return aum.with_signatures((Signature(s.key_id, bad), *sigs[1:]))
    if how == 1:  # signed by a key that is not trusted
        return aum.with_signatures((Signature(OUTSIDER, bytes(64)),))
    if how == 2:  # unsigned
        return aum.with_signatures(None)
    if how == 3:  # a second, bad signature after a good one
        return aum.with_signatures((*sigs, Signature(PUBS[1], bytes(64))))
    # how == 4: wrong parent (a structural error found before any crypto)
    return aum.replace(prev_aum_hash=bytes(32)).with_signatures(aum.signatures)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    edits=st.lists(st.tuples(st.integers(0, len(BATCH) - 1), st.integers(0, 4)), max_size=3),
    parallel=st.booleans(),
)
def test_inform_reports_what_the_one_at_a_time_procedure_reports(
    edits: list[tuple[int, int]], parallel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    updates = list(BATCH)
    for index, how in edits:
        updates[index] = _corrupt(updates[index], how)
    want = _reference_inform(GENESIS, updates)
    with monkeypatch.context() as m:
        if parallel:
            # Force the threaded path even for small batches and one core.
            m.setattr(authority_module, "_PARALLEL_MIN_CHECKS", 1)
            m.setattr(authority_module, "_cores", lambda: 3)
        else:
            m.setattr(authority_module, "_cores", lambda: 1)
        got = _inform(GENESIS, updates)
    assert got == want


def test_a_good_batch_is_accepted_on_the_threaded_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authority_module, "_PARALLEL_MIN_CHECKS", 1)
    monkeypatch.setattr(authority_module, "_cores", lambda: 4)
    assert _inform(GENESIS, BATCH) == BATCH[-1].hash


def test_first_invalid_finds_the_earliest_failure_in_any_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(authority_module, "_PARALLEL_MIN_CHECKS", 1)
    monkeypatch.setattr(authority_module, "_cores", lambda: 3)
    genesis_state = State.from_checkpoint(GENESIS)
    checks = []
    state = genesis_state
    for aum in BATCH:
        for j, s in enumerate(aum.signatures or ()):
            key = state.get_key(s.key_id or b"")
            assert key is not None and key.public is not None
            checks.append((key.public, aum.sig_hash, s.signature or b"", j))
        state = state.apply(aum)
    assert authority_module._first_invalid(checks) is None
    for bad in ([5], [5, 30], [39], [0, 39], [20, 21]):
        broken = list(checks)
        for n in bad:
            public, message, _, j = broken[n]
            broken[n] = (public, message, bytes(64), j)
        assert authority_module._first_invalid(broken) == min(bad)
