"""Retroactive revocation: a compromised key's updates are erased by a co-signed fork."""

from __future__ import annotations

import pytest

from tka import ed25519
from tka.authority import Authority, Signer
from tka.builder import UpdateBuilder
from tka.disablement import disablement_kdf
from tka.errors import StateError, UsageError
from tka.key import Key
from tka.revocation import (
    check_recovery,
    cosign_recovery,
    finish_recovery,
    make_retroactive_revocation,
)
from tka.state import State
from tka.storage.memory import MemoryStore
from tka.sync import missing_aums, sync_offer

SEEDS = [bytes([i + 10]) * 32 for i in range(4)]
PUBS = [ed25519.public_from_seed(s) for s in SEEDS]
EVIL = ed25519.public_from_seed(b"\x66" * 32)


def _setup() -> tuple[MemoryStore, Authority]:
    state = State(
        disablement_values=(disablement_kdf(b"x"),),
        keys=tuple(Key.ed25519(p) for p in PUBS[:3]),
    )
    store = MemoryStore()
    authority, _ = Authority.create(store, state, Signer((SEEDS[0],)))
    # Key 0 is compromised: it adds an attacker key and removes key 2.
    b = UpdateBuilder(authority, Signer((SEEDS[0],)))
    b.add_key(Key.ed25519(EVIL, votes=1))
    b.remove_key(PUBS[2])
    authority.inform(store, b.finalize(store))
    return store, authority


def test_cosigned_revocation_erases_the_compromised_keys_updates() -> None:
    store, authority = _setup()
    assert authority.key_trusted(EVIL)
    aum = make_retroactive_revocation(authority, store, [PUBS[0]], PUBS[1])
    aum = cosign_recovery(aum, Signer((SEEDS[1],)))
    # One vote against the compromised branch's one vote: the tie goes to the
    # lower hash, so make sure of the outcome with a second signer.
    aum = cosign_recovery(aum, Signer((SEEDS[2],)))
    verdict = check_recovery(authority, store, aum)
    assert verdict.wins and verdict.weight == 2 and verdict.competing_weight == 1
    finish_recovery(authority, store, aum)
    assert authority.head_hash == aum.hash
    assert not authority.key_trusted(PUBS[0])
    # The state carried over is today's minus the revoked key: the attacker
    # key it added is still there and must be removed with a normal update.
    assert authority.key_trusted(EVIL)


def test_a_revocation_that_would_lose_the_fork_is_refused() -> None:
    store, authority = _setup()
    # The compromised branch is signed by keys 0 and 1 together.
    b = UpdateBuilder(authority, Signer((SEEDS[0], SEEDS[1])))
    b.set_key_vote(PUBS[1], 3)
    authority.inform(store, b.finalize(store))
    aum = make_retroactive_revocation(
        authority, store, [PUBS[0]], PUBS[1], fork_from=authority.head.parent
    )
    aum = cosign_recovery(aum, Signer((SEEDS[1],)))
    head = authority.head_hash
    verdict = check_recovery(authority, store, aum)
    assert not verdict.wins
    with pytest.raises(StateError, match="co-sign"):
        finish_recovery(authority, store, aum)
    assert authority.head_hash == head


def test_cosigning_twice_with_one_key_is_refused() -> None:
    store, authority = _setup()
    aum = cosign_recovery(
        make_retroactive_revocation(authority, store, [PUBS[0]], PUBS[1]), Signer((SEEDS[1],))
    )
    with pytest.raises(UsageError, match="already signed"):
        cosign_recovery(aum, Signer((SEEDS[1],)))


def test_revoking_every_key_or_an_untrusted_key_is_refused() -> None:
    store, authority = _setup()
    with pytest.raises(StateError):
        make_retroactive_revocation(authority, store, [PUBS[3]], PUBS[1])
    with pytest.raises(StateError, match="all trusted keys"):
        make_retroactive_revocation(
            authority, store, [PUBS[0], PUBS[1], EVIL], PUBS[1], fork_from=authority.head_hash
        )


def test_a_peer_that_syncs_follows_the_revocation() -> None:
    store, authority = _setup()
    peer_store = MemoryStore()
    peer = Authority.bootstrap(peer_store, authority.oldest_ancestor)
    peer.inform(peer_store, missing_aums(authority, store, sync_offer(peer, peer_store)))
    aum = make_retroactive_revocation(authority, store, [PUBS[0]], PUBS[1])
    aum = cosign_recovery(cosign_recovery(aum, Signer((SEEDS[1],))), Signer((SEEDS[2],)))
    finish_recovery(authority, store, aum)
    peer.inform(peer_store, missing_aums(authority, store, sync_offer(peer, peer_store)))
    assert peer.head_hash == authority.head_hash
    assert not peer.key_trusted(PUBS[0])


def test_a_signer_not_trusted_at_the_fork_point_or_being_revoked_is_refused() -> None:
    from tka.errors import NotAuthorized
    from tka.revocation import recovery_signers

    store, authority = _setup()
    # EVIL was added after the fork point (genesis): it cannot start or co-sign.
    with pytest.raises(NotAuthorized, match="not trusted at the fork point"):
        make_retroactive_revocation(authority, store, [PUBS[0]], EVIL)
    with pytest.raises(UsageError, match="among the keys to revoke"):
        make_retroactive_revocation(authority, store, [PUBS[0]], PUBS[0])
    aum = make_retroactive_revocation(authority, store, [PUBS[0]], PUBS[1])
    aum = aum.with_signatures(Signer((SEEDS[1],)).sign_aum(aum.sig_hash))
    with pytest.raises(NotAuthorized, match="being revoked"):
        cosign_recovery(aum, Signer((SEEDS[0],)), authority, store)
    with pytest.raises(NotAuthorized, match="not trusted at the fork point"):
        cosign_recovery(aum, Signer((b"\x66" * 32,)), authority, store)
    # A file carrying such a signature (made without the checks) never counts it.
    tainted = cosign_recovery(aum, Signer((SEEDS[0],)))
    signers = recovery_signers(authority, store, tainted)
    assert [(s.votes, s.problem) for s in signers] == [
        (1, None),
        (0, "is being revoked by this recovery"),
    ]
    verdict = check_recovery(authority, store, tainted)
    assert not verdict.wins and verdict.weight == 1
    with pytest.raises(NotAuthorized, match="being revoked"):
        finish_recovery(authority, store, tainted)


def test_keys_added_by_a_revoked_key_are_named_and_can_be_revoked_with_it() -> None:
    from tka.revocation import plan_revocation

    store, authority = _setup()
    # EVIL (added by the compromised key 0) adds one more key: both are its doing.
    extra = ed25519.public_from_seed(b"\x77" * 32)
    b = UpdateBuilder(authority, Signer((b"\x66" * 32,)))
    b.add_key(Key.ed25519(extra))
    authority.inform(store, b.finalize(store))
    plan = plan_revocation(authority, store, [PUBS[0]], PUBS[1])
    assert [(a.key_id, a.by) for a in plan.added] == [(EVIL, PUBS[0]), (extra, EVIL)]
    assert plan.revoked == (PUBS[0],)
    full = plan_revocation(authority, store, [PUBS[0]], PUBS[1], with_added=True)
    assert set(full.revoked) == {PUBS[0], EVIL, extra}
    aum = cosign_recovery(
        full.aum.with_signatures(Signer((SEEDS[1],)).sign_aum(full.aum.sig_hash)),
        Signer((SEEDS[2],)),
        authority,
        store,
    )
    finish_recovery(authority, store, aum)
    assert {k.key_id for k in authority.keys} == {PUBS[1]}
