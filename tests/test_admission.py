"""The admission engine: Go's verdicts, signatures verified once, head changes as set lookups."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tka import ed25519
from tka.admission import Admission, NodeRecord, check, decide, trusted_key_ids
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


def _go_verdict(state: State, node_key: bytes, sig: bytes) -> tuple[bool, bytes | None]:
    """tka.sig.authorize_node_key, the line-by-line twin of Go's NodeKeyAuthorized."""
    try:
        authorize_node_key(state, node_key, sig)
    except NotAuthorized:
        return False, None
    return True, NodeKeySignature.from_bytes(sig).authorizing_key_id()


def test_decisions_match_node_key_authorized() -> None:
    authority, store = _authority()
    for state in (authority.state,):
        for nk, sig in _cases():
            d = decide(state, nk, sig)
            assert (d.admitted, d.signing_key if d.admitted else None) == _go_verdict(
                state, nk, sig
            ), d.reason
    # And after a key is removed.
    _remove_key(authority, store, PUBS[1])
    for nk, sig in _cases():
        d = decide(authority.state, nk, sig)
        assert d.admitted == _go_verdict(authority.state, nk, sig)[0], d.reason


def test_refusal_reasons_follow_gos_order() -> None:
    authority, _ = _authority()
    cases = _cases()
    reasons = [decide(authority.state, nk, sig).reason for nk, sig in cases]
    assert "does not trust" in reasons[4]  # untrusted key, checked before the signature
    assert "does not authorize the node key" in reasons[3]
    assert "does not decode" in reasons[6]
    assert "credential signatures cannot authorize" in reasons[7]
    assert "does not verify" in reasons[8]
    assert decide(authority.state, _node_key(0), None).reason.endswith("no node-key signature")


VECTORS = Path(__file__).parent.parent / "vectors"


def _nks_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / "nks.json").read_text())["cases"]
    return [c for c in cases if c.get("authority_genesis_hex") and c.get("node_key_hex")]


@pytest.mark.parametrize("case", _nks_cases(), ids=lambda c: c["name"])
def test_nks_vectors_through_the_engine(case: dict[str, Any]) -> None:
    authority = Authority.bootstrap(
        MemoryStore(), AUM.from_bytes(bytes.fromhex(case["authority_genesis_hex"]))
    )
    nk = bytes.fromhex(case["node_key_hex"])
    sig = bytes.fromhex(case["sig_hex"])
    adm = Admission()
    d = adm.decide(authority, nk, sig)
    assert d.admitted is case["authorized"], d.reason
    # Cached, and the same verdict from the bulk path.
    assert adm.decide(authority, nk, sig) == d
    (nd,) = adm.evaluate(authority, [NodeRecord(1, nk, sig)])
    assert nd.decision == d
    if d.admitted and case.get("rotation_details"):
        want = case["rotation_details"]["prev_node_keys_hex"] or []
        assert [k.hex() for k in d.prev_node_keys] == want


def test_crypto_verdict_is_independent_of_trust() -> None:
    nk, sig = _cases()[4]  # signed by a key nobody trusts yet
    c = check(nk, sig)
    assert c.valid and c.root == ed25519.public_from_seed(OUTSIDER_SEED)
    assert not c.under(frozenset()).admitted
    assert c.under(frozenset({c.root})).admitted
    tampered = check(*_cases()[8])
    assert not tampered.valid
    assert not tampered.under(frozenset({PUBS[0]})).admitted


def _nodes(n: int, signers: list[bytes]) -> list[NodeRecord]:
    return [
        NodeRecord(
            i,
            _node_key(100 + i),
            sign_direct(signers[i % len(signers)], _node_key(100 + i)).to_bytes(),
        )
        for i in range(n)
    ]


def test_head_change_needs_no_verification_and_reports_exactly_the_changed_nodes() -> None:
    authority, store = _authority()
    # Node i is signed by the outsider when i % 10 == 0, by key 0 or 1 otherwise.
    nodes = [
        NodeRecord(
            i,
            _node_key(100 + i),
            sign_direct(
                OUTSIDER_SEED if i % 10 == 0 else SEEDS[i % 2], _node_key(100 + i)
            ).to_bytes(),
        )
        for i in range(200)
    ]
    adm = Admission()
    first = adm.reevaluate(None, authority, nodes)
    assert {d.node.node_id for d in first.newly_locked_out} == {
        i for i in range(200) if i % 10 == 0
    }
    assert adm.misses == 200
    before = Authority(authority.head, authority.oldest_ancestor, authority.state)
    outsider = ed25519.public_from_seed(OUTSIDER_SEED)
    update = AUM(AUMKind.ADD_KEY, prev_aum_hash=authority.head_hash, key=Key.ed25519(outsider))
    update = update.with_signatures(Signer((SEEDS[0],)).sign_aum(update.sig_hash))
    authority.inform(store, [update])
    added = adm.reevaluate(before, authority, nodes)
    assert adm.misses == 200  # nothing verified again
    assert {d.node.node_id for d in added.newly_admitted} == {i for i in range(200) if i % 10 == 0}
    assert not added.newly_locked_out and not added.locked_out
    before = Authority(authority.head, authority.oldest_ancestor, authority.state)
    _remove_key(authority, store, PUBS[1])
    removed = adm.reevaluate(before, authority, nodes)
    assert adm.misses == 200
    assert {d.node.node_id for d in removed.changed} == {
        i for i in range(200) if i % 2 == 1 and i % 10
    }
    assert not removed.newly_admitted
    for d in removed.newly_locked_out:
        assert "does not trust" in d.reason


def test_parallel_first_evaluation_matches_one_by_one() -> None:
    authority, _ = _authority()
    pairs = _cases() * 10
    nodes = [NodeRecord(i, nk, sig) for i, (nk, sig) in enumerate(pairs)]
    with ThreadPoolExecutor(2) as pool:
        adm = Admission(executor=pool)
        bulk = adm.evaluate(authority, nodes)
    one = [decide(authority.state, nk, sig) for nk, sig in pairs]
    assert [d.decision for d in bulk] == one
    # Threads of its own when no executor is given.
    adm2 = Admission()
    try:
        assert [d.decision for d in adm2.evaluate(authority, nodes)] == one
    finally:
        adm2.close()


def test_cache_is_bounded() -> None:
    authority, _ = _authority()
    adm = Admission(max_entries=50)
    for nd in _nodes(200, [SEEDS[0]]):
        adm.decide(authority, nd.node_key, nd.signature)
    assert len(adm) <= 50
    with pytest.raises(ValueError):
        Admission(max_entries=0)


def test_trusted_key_ids() -> None:
    authority, _ = _authority()
    assert trusted_key_ids(authority.state) == frozenset(PUBS[:2])


def test_reevaluation_applies_the_rotation_rule_on_both_heads() -> None:
    authority, store = _authority()
    rotation_public = ed25519.public_from_seed(ROTATION_SEED)
    direct = sign_direct(SEEDS[1], _node_key(0), rotation_public)
    rotated = sign_rotation(ROTATION_SEED, _node_key(1), direct)
    nodes = [
        NodeRecord(1, _node_key(0), direct.to_bytes()),  # superseded by node 2's rotation
        NodeRecord(2, _node_key(1), rotated.to_bytes()),
        NodeRecord(3, _node_key(2), sign_direct(SEEDS[0], _node_key(2)).to_bytes()),
    ]
    adm = Admission()
    same = adm.reevaluate(authority, authority, nodes)
    assert not same.changed
    assert [d.admitted for d in same.decisions] == [False, True, True]
    assert same.decisions[0].superseded and "supersedes" in same.decisions[0].reason
    before = Authority(authority.head, authority.oldest_ancestor, authority.state)
    _remove_key(authority, store, PUBS[1])  # the root of nodes 1 and 2
    removed = adm.reevaluate(before, authority, nodes)
    # Node 1 was already out (superseded); only node 2 changes.
    assert [d.node.node_id for d in removed.newly_locked_out] == [2]
    assert not removed.newly_admitted


def test_direct_shortcut_decides_as_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """check's shortcut for direct signatures gives the general path's Checked, case by case."""
    import tka.admission as admission_module

    seed = hashlib.sha256(b"shortcut key").digest()
    node_key = hashlib.sha256(b"shortcut node").digest()
    good = sign_direct(seed, node_key)
    sig_bytes = good.signature or b""
    forged = good.with_signature(bytes([sig_bytes[0] ^ 1]) + sig_bytes[1:])
    cases = [
        (node_key, good.to_bytes()),  # admitted
        (node_key, forged.to_bytes()),  # invalid signature
        (hashlib.sha256(b"other node").digest(), good.to_bytes()),  # other node key
        (b"", NodeKeySignature(1, b"np", good.key_id, sig_bytes).to_bytes()),  # empty node key
        (node_key, NodeKeySignature(1, b"np" + node_key, b"\x01" * 31, sig_bytes).to_bytes()),
        (node_key, sign_direct(seed, node_key, bytes(32)).to_bytes()),  # with a rotation key
    ]

    def refuse(public: bytes, message: bytes, signature: bytes) -> bool:
        raise ed25519.Ed25519LibraryError("library refused")

    for verify in (ed25519.verify_zip215, ed25519.verify_zip215_threaded, refuse):
        shortcut = [check(nk, s, verify) for nk, s in cases]
        with monkeypatch.context() as m:
            m.setattr(admission_module, "_DIRECT", -1)  # no signature takes the shortcut
            general = [check(nk, s, verify) for nk, s in cases]
        assert shortcut == general
    assert check(*cases[0]).valid and not check(*cases[1]).valid


def test_direct_path_of_authorize_node_key_says_what_the_general_path_says() -> None:
    """authorize_node_key's written-out direct path: same verdicts, same messages, same order."""
    import tka.sig as sig_module

    seed = hashlib.sha256(b"direct path key").digest()
    node_key = hashlib.sha256(b"direct path node").digest()
    good = sign_direct(seed, node_key)
    raw = good.signature or b""
    forged = good.with_signature(bytes([raw[0] ^ 1]) + raw[1:])
    trusted = Key.ed25519(ed25519.public_from_seed(seed))
    states = [
        State(None, (bytes(32),), (trusted,), 1, 2),
        State(None, (bytes(32),), (Key.ed25519(PUBS[0]),), 1, 2),  # signer not trusted
        State(None, (bytes(32),), (Key(7, 1, b"x" * 32), trusted), 1, 2),  # unknown kind first
        State(None, (bytes(32),), (Key(1, 1, b"short"), trusted), 1, 2),
    ]
    cases = [
        (node_key, good.to_bytes()),
        (node_key, forged.to_bytes()),
        (hashlib.sha256(b"other node").digest(), good.to_bytes()),
        (b"", good.to_bytes()),
        (node_key, NodeKeySignature(1, b"np" + node_key, b"short", raw).to_bytes()),
        (node_key, NodeKeySignature(1, b"np" + node_key, b"", raw).to_bytes()),
        (node_key, sign_direct(seed, node_key, bytes(32)).to_bytes()),
    ]

    def general_path(state: State, nk: bytes, s: bytes) -> object:
        # authorize_node_key's steps for any kind, as before the direct path.
        decoded = NodeKeySignature.from_bytes(s)
        key = sig_module._trusted_key(state, decoded.authorizing_key_id())
        decoded.verify(nk, key)
        return decoded.rotation_details()

    def outcome(
        check: Callable[[State, bytes, bytes], object], st: State, nk: bytes, s: bytes
    ) -> str:
        try:
            return repr(check(st, nk, s))
        except NotAuthorized as exc:
            return f"refused: {exc}"

    direct = [outcome(authorize_node_key, st, nk, s) for st in states for nk, s in cases]
    general = [outcome(general_path, st, nk, s) for st in states for nk, s in cases]
    assert direct == general
    assert direct[0] == "None" and direct[1] == "refused: invalid signature"


def test_a_key_of_unknown_kind_hides_the_keys_after_it_as_gos_getkey_does() -> None:
    # Only a damaged store can hold such a state; Go's GetKey fails at the
    # unknown-kind key, so a signature by a key listed after it is refused.
    unknown = Key(99, 1, bytes(32))
    node_key = _node_key(7)
    signature = sign_direct(SEEDS[1], node_key).to_bytes()
    before = State(None, (bytes(32),), (Key.ed25519(PUBS[1]), unknown), 1, 2)
    after = State(None, (bytes(32),), (unknown, Key.ed25519(PUBS[1])), 1, 2)
    assert trusted_key_ids(before) == {PUBS[1]}
    assert trusted_key_ids(after) == frozenset()
    assert decide(before, node_key, signature).admitted
    assert not decide(after, node_key, signature).admitted


def test_block_checks_decide_as_check_does() -> None:
    """The worker threads' three-pass block (slice, verify in one loop, decide) against check()."""
    import cbor2

    import tka.admission as admission_module

    rotation_public = ed25519.public_from_seed(ROTATION_SEED)
    nk = _node_key(20)
    plain = sign_direct(SEEDS[0], nk)
    raw = plain.signature or b""
    reordered = cbor2.dumps(  # not the usual layout: decoded, not sliced
        {4: raw, 3: plain.key_id, 2: plain.pubkey, 1: 1}
    )
    pairs = [
        *_cases(),
        (nk, plain.to_bytes()),
        (nk, sign_direct(SEEDS[1], nk, rotation_public).to_bytes()),  # 177-byte layout
        (nk, reordered),
        (nk, NodeKeySignature(1, b"np" + nk, plain.key_id, b"").to_bytes()),  # empty signature
        (nk, NodeKeySignature(1, b"np" + nk, b"\x01" * 31, raw).to_bytes()),  # short root
        (nk, plain.with_signature(bytes(64)).to_bytes()),  # all-zero signature
        (b"", plain.to_bytes()),
        (nk, None),
        (nk, b""),
    ]
    assert admission_module._check_chunk(pairs) == [check(n, s) for n, s in pairs]
