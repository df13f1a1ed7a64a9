"""tka.control as a library: admission decisions, re-evaluation, the cache, and the RPC handlers.

The handlers run in-process over both stores (SQLite always; PostgreSQL when
one is available, see tests/_server_harness.PostgresProvider).
"""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from tka import disablement, ed25519
from tka.aum import AUM, AUMKind, hash_to_text
from tka.authority import Authority, Signer
from tka.builder import UpdateBuilder
from tka.chain import pick_next_aum
from tka.control import Admission, NodeRecord, decide, wire
from tka.control.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    StoreUnavailable,
    Unauthenticated,
    http_status,
)
from tka.control.service import ControlService, RequestContext
from tka.control.store import ControlStore, open_store
from tka.errors import DecodeError, StateError, TKAError, VerificationError
from tka.key import Key
from tka.nlkeys import NodePublic
from tka.sig import resign_nks, sign_credential, sign_direct
from tka.state import State
from tka.storage.memory import MemoryStore

# -- helpers ------------------------------------------------------------------------------


def seed_pair() -> tuple[bytes, bytes]:
    seed = ed25519.generate_seed()
    return seed, ed25519.public_from_seed(seed)


def genesis_for(signer: bytes, publics: list[bytes], values: tuple[bytes, ...]) -> AUM:
    ids = os.urandom(16)
    state = State(
        disablement_values=values,
        keys=tuple(Key.ed25519(p) for p in publics),
        state_id1=int.from_bytes(ids[:8], "little"),
        state_id2=int.from_bytes(ids[8:], "little"),
    )
    _, genesis = Authority.create(MemoryStore(), state, Signer((signer,)))
    return genesis


def authority_with(signer: bytes, publics: list[bytes]) -> tuple[Authority, MemoryStore]:
    store = MemoryStore()
    authority = Authority.bootstrap(store, genesis_for(signer, publics, (bytes(32),)))
    return authority, store


def nk() -> bytes:
    return os.urandom(32)


# -- admission decisions --------------------------------------------------------------------


def test_decide_gives_reasons() -> None:
    a_seed, a_pub = seed_pair()
    b_seed, _ = seed_pair()
    authority, _ = authority_with(a_seed, [a_pub])
    key = nk()
    ok = decide(authority.state, key, sign_direct(a_seed, key).to_bytes())
    assert ok.admitted and ok.signing_key == a_pub and ok.kind == "direct"
    assert f"tlpub:{a_pub.hex()}" in ok.reason

    none = decide(authority.state, key, None)
    assert not none.admitted and "no node-key signature" in none.reason

    garbage = decide(authority.state, key, b"\xff\x00garbage")
    assert not garbage.admitted and "does not decode" in garbage.reason

    untrusted = decide(authority.state, key, sign_direct(b_seed, key).to_bytes())
    assert not untrusted.admitted and "does not trust" in untrusted.reason

    other = decide(authority.state, nk(), sign_direct(a_seed, key).to_bytes())
    assert not other.admitted and "does not verify" in other.reason

    cred = decide(authority.state, key, sign_credential(a_seed, nk()).to_bytes())
    assert not cred.admitted


def test_signatures_are_verified_once_whatever_the_head() -> None:
    a_seed, a_pub = seed_pair()
    authority, store = authority_with(a_seed, [a_pub])
    adm = Admission(max_entries=100)
    key = nk()
    sig = sign_direct(a_seed, key).to_bytes()
    assert adm.decide(authority, key, sig).admitted
    assert (adm.hits, adm.misses) == (0, 1)
    assert adm.decide(authority, key, sig).admitted
    assert (adm.hits, adm.misses) == (1, 1)
    # Another signature for the same key is another entry.
    adm.decide(authority, key, sign_direct(a_seed, key, nk()).to_bytes())
    assert adm.misses == 2
    # A new head needs no new verification: only the trusted keys changed.
    _, b_pub = seed_pair()
    builder = UpdateBuilder(authority, Signer((a_seed,)))
    builder.add_key(Key.ed25519(b_pub))
    authority.inform(store, builder.finalize(store))
    assert adm.decide(authority, key, sig).admitted
    assert adm.misses == 2


def test_cache_is_bounded() -> None:
    a_seed, a_pub = seed_pair()
    authority, _ = authority_with(a_seed, [a_pub])
    adm = Admission(max_entries=10)
    for _ in range(30):
        adm.decide(authority, nk(), None)
    assert len(adm) <= 10


def test_removing_a_key_locks_out_exactly_what_depends_on_it() -> None:
    a_seed, a_pub = seed_pair()
    b_seed, b_pub = seed_pair()
    authority, store = authority_with(a_seed, [a_pub, b_pub])
    rot_seed, rot_pub = seed_pair()
    rot2_seed, rot2_pub = seed_pair()  # one rotation key per node: shared ones look cloned
    keys = [nk() for _ in range(6)]
    sigs: dict[int, bytes] = {
        1: sign_direct(a_seed, keys[0]).to_bytes(),
        2: sign_direct(b_seed, keys[1]).to_bytes(),
        3: sign_direct(b_seed, keys[2]).to_bytes(),
        # A rotation chain rooted in B's signature.
        4: resign_nks(rot_seed, keys[3], sign_direct(b_seed, nk(), rot_pub).to_bytes()),
        # Re-signed by A before the removal: covered.
        5: sign_direct(a_seed, keys[4]).to_bytes(),
        # A rotation chain rooted in A's signature: covered.
        6: resign_nks(rot2_seed, keys[5], sign_direct(a_seed, nk(), rot2_pub).to_bytes()),
    }
    nodes = [NodeRecord(i, keys[i - 1], s) for i, s in sigs.items()]
    adm = Admission()
    assert all(d.admitted for d in adm.evaluate(authority, nodes))
    assert {n.node_id for n in adm.affected_signatures(authority, nodes, b_pub)} == {2, 3, 4}

    before = Authority(authority.head, authority.oldest_ancestor, authority.state)
    builder = UpdateBuilder(authority, Signer((a_seed,)))
    builder.remove_key(b_pub)
    authority.inform(store, builder.finalize(store))
    result = adm.reevaluate(before, authority, nodes)
    assert {d.node.node_id for d in result.newly_locked_out} == {2, 3, 4}
    assert {d.node.node_id for d in result.locked_out} == {2, 3, 4}
    assert not result.newly_admitted
    for d in result.newly_locked_out:
        assert f"tlpub:{b_pub.hex()}" in d.reason
    assert adm.affected_signatures(authority, nodes, b_pub) == []

    # Re-signing by A admits them again.
    nodes2 = [
        NodeRecord(n.node_id, n.node_key, sign_direct(a_seed, n.node_key).to_bytes())
        if n.node_id in (2, 3, 4)
        else n
        for n in nodes
    ]
    again = adm.reevaluate(authority, authority, nodes2)
    assert not again.locked_out


def test_rotation_supersedes_the_old_node_key() -> None:
    a_seed, a_pub = seed_pair()
    authority, _ = authority_with(a_seed, [a_pub])
    rot_seed, rot_pub = seed_pair()
    k0, k1 = nk(), nk()
    direct = sign_direct(a_seed, k0, rot_pub).to_bytes()
    rotated = resign_nks(rot_seed, k1, direct)
    adm = Admission()
    decisions = adm.evaluate(authority, [NodeRecord(1, k0, direct), NodeRecord(2, k1, rotated)])
    by_id = {d.node.node_id: d for d in decisions}
    assert by_id[2].admitted
    assert not by_id[1].admitted and by_id[1].superseded and "supersedes" in by_id[1].reason
    # A clone: two equally long chains from one signature are both rejected.
    k2 = nk()
    clone = resign_nks(rot_seed, k2, direct)
    both = adm.evaluate(authority, [NodeRecord(2, k1, rotated), NodeRecord(3, k2, clone)])
    assert not any(d.admitted for d in both)


# -- the service, in-process -------------------------------------------------------------------


@pytest.fixture
def store(control_store: ControlStore) -> ControlStore:
    """The shared control store fixture (tests/conftest.py), under this file's name."""
    return control_store


@dataclass
class Member:
    node_id: int
    token: str
    key: NodePublic


@dataclass
class Net:
    svc: ControlService
    name: str
    a_seed: bytes
    a_pub: bytes
    b_seed: bytes
    b_pub: bytes
    secret: bytes
    members: dict[str, Member] = field(default_factory=dict)
    genesis: AUM | None = None

    def register(
        self, name: str, rotation: bytes = b"", nl_key: bytes = b"", may_init: bool = True
    ) -> Member:
        key = NodePublic(nk())
        out = self.svc.register_node(
            self.name, wire.AdminRegisterRequest(key, rotation, nl_key, name, may_init)
        )
        m = Member(out["NodeID"], out["Token"], key)
        self.members[name] = m
        return m

    def rpc(self, path: str, who: str | Member, body: dict[str, Any]) -> dict[str, Any]:
        m = self.members[who] if isinstance(who, str) else who
        return self.svc.handle(path, m.token, {"NodeKey": m.key.text(), **body}, RequestContext())

    def authority(self) -> Authority:
        with self.svc.store.read() as txn:
            return Authority.open(txn.aum_storage(self.name))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def net(store: ControlStore) -> Net:
    svc = ControlService(store)
    svc.create_tailnet("t1")
    a_seed, a_pub = seed_pair()
    b_seed, b_pub = seed_pair()
    n = Net(svc, "t1", a_seed, a_pub, b_seed, b_pub, disablement.generate_secret())
    n.register("a", nl_key=a_pub)
    n.register("b", nl_key=b_pub)
    return n


def enable(n: Net) -> AUM:
    genesis = genesis_for(n.a_seed, [n.a_pub, n.b_pub], (disablement.disablement_kdf(n.secret),))
    need = n.rpc("/machine/tka/init/begin", "a", {"GenesisAUM": b64(genesis.to_bytes())})
    sigs = {
        str(i["NodeID"]): b64(
            sign_direct(
                n.a_seed,
                NodePublic.from_text(i["NodePublic"]).raw,
                base64.b64decode(i["RotationPubkey"] or ""),
            ).to_bytes()
        )
        for i in need["NeedSignatures"]
    }
    assert n.rpc("/machine/tka/init/finish", "a", {"Signatures": sigs}) == {}
    n.genesis = genesis
    return genesis


def test_init_flow_checks_every_step(net: Net) -> None:
    genesis = genesis_for(net.a_seed, [net.a_pub, net.b_pub], (bytes(32),))
    # Finish before begin.
    with pytest.raises(Conflict, match="init/begin first"):
        net.rpc("/machine/tka/init/finish", "a", {"Signatures": {}})
    # A genesis signed by a key its state does not trust.
    stranger, _ = seed_pair()
    unsigned = AUM(
        AUMKind.CHECKPOINT,
        state=State(disablement_values=(bytes(32),), keys=(Key.ed25519(net.a_pub),)),
    )
    bad = unsigned.with_signatures(Signer((stranger,)).sign_aum(unsigned.sig_hash))
    with pytest.raises(VerificationError):
        net.rpc("/machine/tka/init/begin", "a", {"GenesisAUM": b64(bad.to_bytes())})
    # Node b's registered tailnet-lock key did not sign this genesis.
    with pytest.raises(Forbidden, match="tailnet-lock key"):
        net.rpc("/machine/tka/init/begin", "b", {"GenesisAUM": b64(genesis.to_bytes())})
    # Not a checkpoint.
    b = UpdateBuilder(Authority.bootstrap(MemoryStore(), genesis), Signer((net.a_seed,)))
    b.add_key(Key.ed25519(seed_pair()[1]))
    not_cp = b.updates[0]
    with pytest.raises(BadRequest, match="checkpoint"):
        net.rpc("/machine/tka/init/begin", "a", {"GenesisAUM": b64(not_cp.to_bytes())})
    with pytest.raises(BadRequest, match="not an AUM"):
        net.rpc("/machine/tka/init/begin", "a", {"GenesisAUM": b64(b"\x01\x02")})

    need = net.rpc("/machine/tka/init/begin", "a", {"GenesisAUM": b64(genesis.to_bytes())})
    infos = {i["NodeID"]: i for i in need["NeedSignatures"]}
    assert set(infos) == {net.members["a"].node_id, net.members["b"].node_id}

    def sig(node_id: int, seed: bytes = net.a_seed) -> str:
        return b64(
            sign_direct(seed, NodePublic.from_text(infos[node_id]["NodePublic"]).raw).to_bytes()
        )

    a_id, b_id = net.members["a"].node_id, net.members["b"].node_id
    with pytest.raises(Forbidden, match="another node"):
        net.rpc("/machine/tka/init/finish", "b", {"Signatures": {str(a_id): sig(a_id)}})
    with pytest.raises(Conflict, match="no signature for nodes"):
        net.rpc("/machine/tka/init/finish", "a", {"Signatures": {str(a_id): sig(a_id)}})
    with pytest.raises(VerificationError, match=f"Signatures\\[{b_id}\\]"):
        net.rpc(
            "/machine/tka/init/finish",
            "a",
            {"Signatures": {str(a_id): sig(a_id), str(b_id): sig(b_id, stranger)}},
        )
    with pytest.raises(Conflict, match="no such nodes"):
        net.rpc("/machine/tka/init/finish", "a", {"Signatures": {"999999": sig(a_id)}})
    # Nothing was enabled by the failures.
    assert net.svc.tailnet_status("t1")["Status"] == "pending"
    done = {str(a_id): sig(a_id), str(b_id): sig(b_id)}
    assert net.rpc("/machine/tka/init/finish", "a", {"Signatures": done}) == {}
    status = net.svc.tailnet_status("t1")
    assert status["Status"] == "enabled" and status["Head"] == genesis.hash_text
    assert status["LockedOut"] == 0
    # A replay of begin or finish is refused.
    with pytest.raises(Conflict, match="already enabled"):
        net.rpc("/machine/tka/init/begin", "a", {"GenesisAUM": b64(genesis.to_bytes())})
    with pytest.raises(Conflict, match="already enabled"):
        net.rpc("/machine/tka/init/finish", "a", {"Signatures": done})


def test_request_validation(net: Net) -> None:
    enable(net)
    a = net.members["a"]
    cases: list[tuple[dict[str, Any], type[TKAError], str]] = [
        ({"NodeKey": 5}, BadRequest, "NodeKey: expected a nodekey"),
        ({"NodeKey": "nodekey:zz"}, BadRequest, "NodeKey"),
        ({"NodeKey": None}, BadRequest, "missing required field"),
        ({"Head": 7}, BadRequest, "Head: expected an AUM hash"),
        ({"Head": "A" * 51}, BadRequest, "Head: not an AUM hash"),
        ({"Ancestors": "x"}, BadRequest, "Ancestors: expected an array"),
        ({"Ancestors": [1]}, BadRequest, r"Ancestors\[0\]"),
        ({"Version": "1"}, BadRequest, "Version: expected an integer"),
        ({"Version": 1.5}, BadRequest, "Version"),
        ({"Version": 2**64}, BadRequest, "out of range"),
    ]
    base = {
        "NodeKey": a.key.text(),
        "Head": hash_to_text(net.genesis.hash if net.genesis else b""),
        "Ancestors": [],
    }
    for patch, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            net.svc.handle("/machine/tka/sync/offer", a.token, {**base, **patch}, RequestContext())
    # Go's decoder: unknown fields ignored, names matched ignoring case.
    out = net.svc.handle(
        "/machine/tka/sync/offer",
        a.token,
        {"nodekey": a.key.text(), "HEAD": base["Head"], "Extra": [1, 2]},
        RequestContext(),
    )
    assert out["Head"] == base["Head"] and out["MissingAUMs"] == []
    with pytest.raises(BadRequest, match="not valid base64"):
        net.rpc("/machine/tka/sign", "a", {"Signature": "***"})
    with pytest.raises(NotFound):
        net.svc.handle("/machine/tka/nope", a.token, {}, RequestContext())
    with pytest.raises(BadRequest, match="not valid JSON"):
        wire.parse_body(b"{nope")
    with pytest.raises(BadRequest, match="JSON object"):
        wire.parse_body(b"[1]")
    with pytest.raises(BadRequest, match="NaN"):
        wire.parse_body(b'{"a": NaN}')


def test_authentication(net: Net) -> None:
    a = net.members["a"]
    body = {"NodeKey": a.key.text()}
    wrong = a.token[:-1] + ("A" if a.token[-1] != "A" else "B")
    for token in (None, "", "Bearer x", "tkanode_1_short", wrong):
        with pytest.raises(Unauthenticated):
            net.svc.handle("/machine/tka/bootstrap", token, body, RequestContext())
    # An admin token is not a node token, and the other way round.
    admin = net.svc.mint_admin_token()
    with pytest.raises(Unauthenticated):
        net.svc.handle("/machine/tka/bootstrap", admin, body, RequestContext())
    with pytest.raises(Unauthenticated):
        net.svc.authenticate_admin(a.token)
    net.svc.authenticate_admin(admin)
    # A token of one node with another node's key.
    b = net.members["b"]
    with pytest.raises(Forbidden, match="NodeKey"):
        net.svc.handle(
            "/machine/tka/bootstrap", a.token, {"NodeKey": b.key.text()}, RequestContext()
        )
    # A huge node ID in a token is an unknown token, not a crash.
    with pytest.raises(Unauthenticated):
        net.svc.handle(
            "/machine/tka/bootstrap",
            "tkanode_9999999999999999999_" + "A" * 43,
            body,
            RequestContext(),
        )


def test_bootstrap_sync_and_forks(net: Net) -> None:
    genesis = enable(net)
    boot = net.rpc("/machine/tka/bootstrap", "b", {"Head": ""})
    assert base64.b64decode(boot["GenesisAUM"]) == genesis.to_bytes()
    assert net.rpc("/machine/tka/bootstrap", "b", {"Head": genesis.hash_text}) == {}

    # Two nodes change the key set from the same head: a fork.
    store_a = MemoryStore()
    node_a = Authority.bootstrap(store_a, genesis)
    store_b = MemoryStore()
    node_b = Authority.bootstrap(store_b, genesis)
    ba = UpdateBuilder(node_a, Signer((net.a_seed,)))
    ba.add_key(Key.ed25519(seed_pair()[1]))
    (aum_a,) = ba.finalize(store_a)
    bb = UpdateBuilder(node_b, Signer((net.b_seed,)))
    bb.add_key(Key.ed25519(seed_pair()[1]))
    (aum_b,) = bb.finalize(store_b)
    winner = pick_next_aum(node_a.state, [aum_a, aum_b])
    loser = aum_b if winner is aum_a else aum_a
    loser_node = "b" if loser is aum_b else "a"
    winner_node = "a" if loser_node == "b" else "b"

    def send(who: str, aum: AUM, interactive: bool) -> dict[str, Any]:
        return net.rpc(
            "/machine/tka/sync/send",
            who,
            {
                "Head": aum.hash_text,
                "MissingAUMs": [b64(aum.to_bytes())],
                "Interactive": interactive,
            },
        )

    assert send(winner_node, winner, True)["Head"] == winner.hash_text
    # An interactive change that loses the fork is refused and not kept.
    with pytest.raises(Conflict, match="loses a fork"):
        send(loser_node, loser, True)
    with net.svc.store.read() as txn:
        assert txn.aum_storage("t1").get(loser.hash) is None
    # Sent by an automatic sync it is kept (it is valid), and the head stays.
    assert send(loser_node, loser, False)["Head"] == winner.hash_text
    with net.svc.store.read() as txn:
        assert txn.aum_storage("t1").get(loser.hash) is not None
    # A replayed send changes nothing.
    assert send(winner_node, winner, True)["Head"] == winner.hash_text

    # The offer of a node still at genesis gets the winner back.
    offer = net.rpc(
        "/machine/tka/sync/offer",
        "a",
        {"Head": genesis.hash_text, "Ancestors": [genesis.hash_text]},
    )
    assert offer["Head"] == winner.hash_text
    assert [base64.b64decode(x) for x in offer["MissingAUMs"]] == [winner.to_bytes()]


def test_sync_send_refuses_bad_aums_whole(net: Net) -> None:
    genesis = enable(net)
    store = MemoryStore()
    node = Authority.bootstrap(store, genesis)
    b = UpdateBuilder(node, Signer((net.a_seed,)))
    b.add_key(Key.ed25519(seed_pair()[1]))
    b.add_key(Key.ed25519(seed_pair()[1]))
    first, second = b.finalize(store)
    # Tamper with the second AUM's signature: nothing of the batch is kept.
    sig = second.signatures[0]
    forged = second.with_signatures((type(sig)(sig.key_id, bytes(64)),))
    body = {
        "Head": forged.hash_text,
        "MissingAUMs": [b64(first.to_bytes()), b64(forged.to_bytes())],
    }
    with pytest.raises(VerificationError):
        net.rpc("/machine/tka/sync/send", "a", body)
    with net.svc.store.read() as txn:
        assert txn.aum_storage("t1").get(first.hash) is None
    assert net.svc.tailnet_status("t1")["Head"] == genesis.hash_text
    # An AUM whose parent the service does not hold.
    with pytest.raises(Conflict, match="not held by the service"):
        net.rpc(
            "/machine/tka/sync/send",
            "a",
            {"Head": second.hash_text, "MissingAUMs": [b64(second.to_bytes())]},
        )
    # A second genesis.
    other = genesis_for(net.a_seed, [net.a_pub], (bytes(32),))
    with pytest.raises(Conflict, match="no parent"):
        net.rpc(
            "/machine/tka/sync/send",
            "a",
            {"Head": other.hash_text, "MissingAUMs": [b64(other.to_bytes())]},
        )
    # An offer from another authority.
    with pytest.raises(Conflict, match="share no AUM"):
        net.rpc(
            "/machine/tka/sync/offer",
            "a",
            {"Head": other.hash_text, "Ancestors": [other.hash_text]},
        )


def test_sign_affected_sigs_and_map(net: Net) -> None:
    enable(net)
    d = net.register("d")
    # Registered after enablement: locked out until signed.
    locked = [n for n in net.svc.node_decisions("t1") if not n.admitted]
    assert [n.node_id for n in locked] == [d.node_id] and "no node-key signature" in locked[
        0
    ].reason
    with pytest.raises(NotFound, match="no node with"):
        net.rpc(
            "/machine/tka/sign", "a", {"Signature": b64(sign_direct(net.b_seed, nk()).to_bytes())}
        )
    stranger, _ = seed_pair()
    with pytest.raises(VerificationError, match="does not trust"):
        net.rpc(
            "/machine/tka/sign",
            "a",
            {"Signature": b64(sign_direct(stranger, d.key.raw).to_bytes())},
        )
    with pytest.raises(VerificationError, match="credential"):
        net.rpc(
            "/machine/tka/sign",
            "a",
            {"Signature": b64(sign_credential(net.b_seed, nk()).to_bytes())},
        )
    with pytest.raises(BadRequest):
        net.rpc("/machine/tka/sign", "a", {"Signature": b64(b"\x00junk")})
    sig = sign_direct(net.b_seed, d.key.raw).to_bytes()
    assert net.rpc("/machine/tka/sign", "b", {"Signature": b64(sig)}) == {}
    assert all(n.admitted for n in net.svc.node_decisions("t1"))
    got = net.rpc("/machine/tka/affected-sigs", "a", {"KeyID": b64(net.b_pub)})
    assert [base64.b64decode(s) for s in got["Signatures"]] == [sig]
    with pytest.raises(BadRequest, match="KeyID"):
        net.rpc("/machine/tka/affected-sigs", "a", {"KeyID": b64(b"short")})
    m = net.rpc("/machine/map", "d", {})
    assert m["Node"]["ID"] == d.node_id and m["TKAInfo"]["Head"]
    assert {p["ID"] for p in m["Peers"]} == {net.members["a"].node_id, net.members["b"].node_id}


def test_rotation_through_register(net: Net) -> None:
    rot_seed, rot_pub = seed_pair()
    c = net.register("c", rotation=rot_pub)
    enable(net)
    m = net.rpc("/machine/map", "c", {})
    old_sig = base64.b64decode(m["Node"]["KeySignature"])
    new_key = NodePublic(nk())
    new_sig = resign_nks(rot_seed, new_key.raw, old_sig)
    body = {"NodeKey": new_key.text(), "OldNodeKey": c.key.text(), "NodeKeySignature": b64(new_sig)}
    # Without a signature, or with one that does not admit the key: refused.
    with pytest.raises(VerificationError, match="required"):
        net.svc.handle(
            "/machine/register", c.token, {**body, "NodeKeySignature": None}, RequestContext()
        )
    with pytest.raises(VerificationError):
        net.svc.handle(
            "/machine/register",
            c.token,
            {**body, "NodeKeySignature": b64(old_sig)},
            RequestContext(),
        )
    out = net.svc.handle("/machine/register", c.token, body, RequestContext())
    assert out["MachineAuthorized"] is True
    # A retried rotation is answered the same; a stale one is refused.
    assert net.svc.handle("/machine/register", c.token, body, RequestContext()) == out
    stale = {**body, "NodeKey": NodePublic(nk()).text()}
    with pytest.raises(Forbidden, match="OldNodeKey"):
        net.svc.handle("/machine/register", c.token, stale, RequestContext())
    c.key = new_key
    d = {n.node_id: n for n in net.svc.node_decisions("t1")}[c.node_id]
    assert d.admitted and "rotation" in d.reason


def test_disable_and_replay(net: Net) -> None:
    genesis = enable(net)
    with pytest.raises(Forbidden, match="does not match"):
        net.rpc(
            "/machine/tka/disable",
            "a",
            {"Head": genesis.hash_text, "DisablementSecret": b64(b"x" * 32)},
        )
    with pytest.raises(BadRequest, match="longer than"):
        net.rpc(
            "/machine/tka/disable",
            "a",
            {"Head": genesis.hash_text, "DisablementSecret": b64(b"x" * 2000)},
        )
    unknown = hash_to_text(bytes(32))
    with pytest.raises(Conflict, match="sync first"):
        net.rpc(
            "/machine/tka/disable", "a", {"Head": unknown, "DisablementSecret": b64(net.secret)}
        )
    body = {"Head": genesis.hash_text, "DisablementSecret": b64(net.secret)}
    assert net.rpc("/machine/tka/disable", "a", body) == {}
    with pytest.raises(Conflict, match="already disabled"):
        net.rpc("/machine/tka/disable", "a", body)
    # Nodes that were offline learn the secret at bootstrap.
    boot = net.rpc("/machine/tka/bootstrap", "b", {"Head": genesis.hash_text})
    assert base64.b64decode(boot["DisablementSecret"]) == net.secret
    with pytest.raises(Conflict, match="disabled"):
        net.rpc("/machine/tka/sync/offer", "b", {"Head": genesis.hash_text})
    # The disabled authority's genesis cannot be submitted again (a replay).
    with pytest.raises(Conflict, match="replay"):
        net.rpc("/machine/tka/init/begin", "a", {"GenesisAUM": b64(genesis.to_bytes())})
    # A new authority can be started; the log then shows it.
    enable(net)
    assert net.svc.tailnet_status("t1")["Status"] == "enabled"
    assert net.genesis is not None and net.genesis.hash_text in net.svc.lock_log("t1")


def test_admin_operations(net: Net) -> None:
    with pytest.raises(Conflict, match="already exists"):
        net.svc.create_tailnet("t1")
    for bad in ("", "-x", "a/b", "x" * 64, "nul\x00"):
        with pytest.raises(BadRequest):
            net.svc.create_tailnet(bad)
    with pytest.raises(NotFound):
        net.svc.node_decisions("nope")
    with pytest.raises(Conflict, match="never enabled"):
        net.svc.lock_log("t1")
    with pytest.raises(Conflict, match="already registered"):
        net.svc.register_node("t1", wire.AdminRegisterRequest(net.members["a"].key))
    with pytest.raises(BadRequest, match="RotationPubkey"):
        net.svc.register_node("t1", wire.AdminRegisterRequest(NodePublic(nk()), b"short"))
    enable(net)
    log = net.svc.lock_log("t1", 5)
    assert '"SchemaVersion": "1"' in log or '"SchemaVersion":"1"' in log
    net.svc.delete_node("t1", net.members["b"].node_id)
    with pytest.raises(Unauthenticated):
        net.rpc("/machine/map", "b", {})


def test_http_status_mapping() -> None:
    assert http_status(BadRequest("x")) == (400, "bad_request")
    assert http_status(DecodeError("x"))[0] == 400
    assert http_status(Unauthenticated("x"))[0] == 401
    assert http_status(Forbidden("x"))[0] == 403
    assert http_status(NotFound("x"))[0] == 404
    assert http_status(Conflict("x"))[0] == 409
    assert http_status(StateError("x"))[0] == 409
    assert http_status(PayloadTooLarge("x"))[0] == 413
    assert http_status(VerificationError("x"))[0] == 422
    assert http_status(StoreUnavailable("x"))[0] == 503


def test_concurrent_writers_never_both_win(net: Net) -> None:
    """Replicas writing one tailnet at once: the stored head always follows the fork rules."""
    genesis = enable(net)
    # Each writer is its own service instance (its own caches), as replicas are.
    url = getattr(net.svc.store, "path", None)
    writers = 6
    aums = []
    for i in range(writers):
        store = MemoryStore()
        node = Authority.bootstrap(store, genesis)
        seed = net.a_seed if i % 2 else net.b_seed
        b = UpdateBuilder(node, Signer((seed,)))
        b.add_key(Key.ed25519(seed_pair()[1]))
        aums.append(b.finalize(store)[0])
    stores = []
    if url is not None:
        stores = [open_store(f"sqlite:///{url}") for _ in range(writers)]
    else:
        stores = [net.svc.store for _ in range(writers)]
    services = [ControlService(s) for s in stores]
    barrier = threading.Barrier(writers)
    results: list[str] = [""] * writers
    who = net.members["a"]

    def run(i: int) -> None:
        barrier.wait()
        try:
            services[i].handle(
                "/machine/tka/sync/send",
                who.token,
                {
                    "NodeKey": who.key.text(),
                    "Head": aums[i].hash_text,
                    "MissingAUMs": [b64(aums[i].to_bytes())],
                    "Interactive": True,
                },
                RequestContext(),
            )
            results[i] = "ok"
        except Conflict:
            results[i] = "lost"

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with net.svc.store.read() as txn:
        storage = txn.aum_storage("t1")
        kept = [a for a in aums if storage.get(a.hash) is not None]
    # Refused ones left nothing behind; kept ones were all answered 200.
    assert {a.hash for a in kept} == {aums[i].hash for i in range(writers) if results[i] == "ok"}
    expected = pick_next_aum(Authority.bootstrap(MemoryStore(), genesis).state, kept)
    # A fresh service (no cache) opens the chain and agrees with the stored head.
    fresh = ControlService(net.svc.store).tailnet_status("t1")
    assert fresh["Head"] == expected.hash_text
    assert net.authority().head_hash == expected.hash
    for s in stores:
        if s is not net.svc.store:
            s.close()


def test_an_empty_sync_send_records_the_reported_head_once_flushed(net: Net) -> None:
    genesis = enable(net)
    b = net.members["b"]

    def reported() -> bytes | None:
        with net.svc.store.read() as txn:
            row = txn.node(b.node_id)
        assert row is not None
        return row.reported_head

    before = reported()
    answer = net.rpc("/machine/tka/sync/send", "b", {"Head": genesis.hash_text})
    assert base64.b32decode(answer["Head"] + "====") == genesis.hash
    # Held in memory until the flush (the timer's, or the service's stop).
    net.svc.flush_reported_heads()
    assert reported() == genesis.hash != before
    # The same head again is nothing to write.
    net.rpc("/machine/tka/sync/send", "b", {"Head": genesis.hash_text})
    assert not net.svc._reported  # nothing pending
    # A wrong node key is refused on this path too.
    with pytest.raises(Forbidden):
        net.svc.handle(
            "/machine/tka/sync/send",
            b.token,
            {"NodeKey": net.members["a"].key.text(), "Head": genesis.hash_text},
            RequestContext(),
        )
