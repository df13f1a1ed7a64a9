"""Admission verdicts for control planes: correct, cached per head, re-evaluated in bulk."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from tka import ed25519
from tka.admission import AdmissionCache, Verdict, admission_pool, evaluate, evaluate_many
from tka.aum import AUM, AUMKind
from tka.authority import Authority, Signer
from tka.errors import NotAuthorized
from tka.key import Key
from tka.sig import (
    NodeKeySignature,
    authorize_node_key,
    sign_credential,
    sign_direct,
    sign_rotation,
)
from tka.state import State
from tka.storage.memory import MemoryStore

SEEDS = [hashlib.sha256(b"admission key %d" % i).digest() for i in range(3)]
PUBS = [ed25519.public_from_seed(s) for s in SEEDS]
ROTATION_SEED = hashlib.sha256(b"rotation").digest()
OUTSIDER_SEED = hashlib.sha256(b"outsider").digest()


def _node_key(i: int) -> bytes:
    return hashlib.sha256(b"node %d" % i).digest()


def _authority() -> tuple[Authority, MemoryStore]:
    store = MemoryStore()
    state = State(None, (bytes(32),), (Key.ed25519(PUBS[0]), Key.ed25519(PUBS[1])), 1, 2)
    authority, _ = Authority.create(store, state, Signer((SEEDS[0],)))
    return authority, store


def _remove_key(authority: Authority, store: MemoryStore, key_id: bytes) -> None:
    """Move the head: remove a trusted key, signed by key 0."""
    update = AUM(AUMKind.REMOVE_KEY, prev_aum_hash=authority.head_hash, key_id=key_id)
    update = update.with_signatures(Signer((SEEDS[0],)).sign_aum(update.sig_hash))
    authority.inform(store, [update])


def _cases() -> list[tuple[bytes, bytes]]:
    """(node key, signature bytes): admitted ones and refused ones of every sort."""
    rotation_public = ed25519.public_from_seed(ROTATION_SEED)
    direct = sign_direct(SEEDS[0], _node_key(0), rotation_public)
    rotated = sign_rotation(ROTATION_SEED, _node_key(1), direct)
    cred_public = ed25519.public_from_seed(hashlib.sha256(b"cred").digest())
    return [
        (_node_key(0), direct.to_bytes()),  # admitted by key 0
        (_node_key(1), rotated.to_bytes()),  # rotation: admitted by key 0
        (_node_key(2), sign_direct(SEEDS[1], _node_key(2)).to_bytes()),  # admitted by key 1
        (_node_key(3), sign_direct(SEEDS[0], _node_key(4)).to_bytes()),  # other node's signature
        (_node_key(5), sign_direct(OUTSIDER_SEED, _node_key(5)).to_bytes()),  # untrusted key
        (_node_key(6), b"\xa1\x01"),  # not a valid signature structure
        (_node_key(7), b"\xff\x00garbage"),  # not CBOR
        (_node_key(8), sign_credential(SEEDS[0], cred_public).to_bytes()),  # credential alone
        (_node_key(9), direct.to_bytes()[:-1] + bytes([direct.to_bytes()[-1] ^ 1])),  # tampered
    ]


def _expected(state: State, node_key: bytes, sig: bytes) -> Verdict:
    try:
        authorize_node_key(state, node_key, sig)
    except NotAuthorized as exc:
        return Verdict(False, None, str(exc))
    return Verdict(True, NodeKeySignature.from_bytes(sig).authorizing_key_id())


def test_verdicts_match_node_key_authorized() -> None:
    authority, _ = _authority()
    verdicts = [evaluate(authority.state, nk, sig) for nk, sig in _cases()]
    assert [v.admitted for v in verdicts] == [True, True, True] + [False] * 6
    assert [v.key_id for v in verdicts[:3]] == [PUBS[0], PUBS[0], PUBS[1]]
    for (nk, sig), v in zip(_cases(), verdicts, strict=True):
        assert v == _expected(authority.state, nk, sig)
        assert v.admitted == (v.reason is None)
    assert verdicts[5].reason is not None and verdicts[5].reason.startswith("unserialize:")
    assert verdicts[7].reason == "credential signatures cannot authorize nodes on their own"


def test_cache_hit_returns_the_same_verdict() -> None:
    authority, _ = _authority()
    cache = AdmissionCache()
    for nk, sig in _cases():
        first = cache.check(authority, nk, sig)
        again = cache.check(authority, nk, sig)
        assert again is first
        assert first == evaluate(authority.state, nk, sig)
    assert cache.misses == len(_cases())
    assert cache.hits == len(_cases())
    assert len(cache) == len(_cases())
    nk, sig = _cases()[0]
    assert cache.lookup(authority.head_hash, nk, sig) == Verdict(True, PUBS[0])
    # A different signature for the same node key is a different entry.
    other = sign_direct(SEEDS[1], nk).to_bytes()
    assert cache.lookup(authority.head_hash, nk, other) is None


def test_a_head_change_invalidates() -> None:
    authority, store = _authority()
    cache = AdmissionCache()
    nk, sig = _cases()[2]  # admitted by key 1
    old_head = authority.head_hash
    assert cache.check(authority, nk, sig).admitted
    _remove_key(authority, store, PUBS[1])
    assert authority.head_hash != old_head
    # Not served from the old head's entry: key 1 is no longer trusted.
    verdict = cache.check(authority, nk, sig)
    assert not verdict.admitted
    assert verdict.reason == "key: the signing key is not trusted by the authority"
    assert cache.head == authority.head_hash
    assert cache.lookup(old_head, nk, sig) is None  # old head's verdicts were dropped
    assert len(cache) == 1


def test_refresh_fills_the_cache_for_the_new_head() -> None:
    authority, store = _authority()
    cache = AdmissionCache()
    cases = _cases()
    before = cache.refresh(authority, cases)
    assert before == [evaluate(authority.state, nk, sig) for nk, sig in cases]
    _remove_key(authority, store, PUBS[1])
    with ThreadPoolExecutor(2) as pool:
        after = cache.refresh(authority, cases * 10, pool)  # enough pairs to use the pool
    assert after == [evaluate(authority.state, nk, sig) for nk, sig in cases * 10]
    assert [v.admitted for v in after[:3]] == [True, True, False]
    hits = cache.hits
    for nk, sig in cases:
        cache.check(authority, nk, sig)
    assert cache.hits == hits + len(cases)


def test_evaluate_many_over_processes_matches_in_process() -> None:
    authority, _ = _authority()
    pairs = _cases() * 20
    want = evaluate_many(authority.state, pairs)
    pool = admission_pool(2)
    try:
        got = evaluate_many(authority.state, pairs, pool)
    finally:
        pool.shutdown()
    assert got == want
    assert got == [_expected(authority.state, nk, sig) for nk, sig in pairs]


def test_cache_is_bounded() -> None:
    authority, _ = _authority()
    cache = AdmissionCache(max_entries=10)
    sigs = [(_node_key(i), sign_direct(SEEDS[0], _node_key(i)).to_bytes()) for i in range(25)]
    for nk, sig in sigs:
        cache.check(authority, nk, sig)
        assert len(cache) <= 10
    # The newest are kept, the oldest dropped.
    assert cache.lookup(authority.head_hash, *sigs[-1]) is not None
    assert cache.lookup(authority.head_hash, *sigs[0]) is None
    cache.clear()
    assert len(cache) == 0 and cache.head is None
    with pytest.raises(ValueError):
        AdmissionCache(max_entries=0)
