"""The control service's limits, in-process over real stores (issue 10).

Who may initialize, signature counts refused before verification, the
disable rate limit, token re-minting and admin-token revocation, the schema
upgrade that added ``may_init``, and verification outside the write lock.
SQLite always; PostgreSQL when one is available.
"""

from __future__ import annotations

import base64
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _hostile import mixed_order_genesis, mixed_order_genesis_distinct

from tka import disablement, ed25519
from tka.aum import AUM, Signature
from tka.authority import Authority, Signer
from tka.builder import UpdateBuilder
from tka.control import wire
from tka.control.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)
from tka.control.service import DISABLE_ATTEMPTS, ControlService, RequestContext
from tka.control.store import SCHEMA_VERSION, ControlStore, open_store
from tka.key import Key
from tka.nlkeys import NodePublic
from tka.sig import sign_direct
from tka.state import State
from tka.storage.memory import MemoryStore


@pytest.fixture
def store(control_store: ControlStore) -> ControlStore:
    """The shared control store fixture (tests/conftest.py), under this file's name."""
    return control_store


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _register(svc: ControlService, tailnet: str, may_init: bool = False) -> tuple[str, NodePublic]:
    key = NodePublic(os.urandom(32))
    out = svc.register_node(tailnet, wire.AdminRegisterRequest(key, may_init=may_init))
    assert out["MayInit"] is may_init
    return str(out["Token"]), key


def _rpc(svc: ControlService, path: str, who: tuple[str, NodePublic], body: dict[str, Any]) -> Any:
    token, key = who
    return svc.handle(path, token, {"NodeKey": key.text(), **body}, RequestContext())


def _genesis(seed: bytes, secret: bytes) -> AUM:
    ids = os.urandom(16)
    state = State(
        disablement_values=(disablement.disablement_kdf(secret),),
        keys=(Key.ed25519(ed25519.public_from_seed(seed)),),
        state_id1=int.from_bytes(ids[:8], "little"),
        state_id2=int.from_bytes(ids[8:], "little"),
    )
    return Authority.create(MemoryStore(), state, Signer((seed,)))[1]


def _enable(svc: ControlService, who: tuple[str, NodePublic], seed: bytes, secret: bytes) -> AUM:
    genesis = _genesis(seed, secret)
    need = _rpc(svc, "/machine/tka/init/begin", who, {"GenesisAUM": _b64(genesis.to_bytes())})
    sigs = {
        str(i["NodeID"]): _b64(
            sign_direct(seed, NodePublic.from_text(i["NodePublic"]).raw).to_bytes()
        )
        for i in need["NeedSignatures"]
    }
    _rpc(svc, "/machine/tka/init/finish", who, {"Signatures": sigs})
    return genesis


def test_only_nodes_allowed_to_init_may_begin(store: ControlStore) -> None:
    svc = ControlService(store)
    svc.create_tailnet("t1")
    plain = _register(svc, "t1")
    genesis = _genesis(ed25519.generate_seed(), os.urandom(32))
    body = {"GenesisAUM": _b64(genesis.to_bytes())}
    with pytest.raises(Forbidden, match="may not initialize"):
        _rpc(svc, "/machine/tka/init/begin", plain, body)
    assert svc.tailnet_status("t1")["Status"] == "off"
    node_id = int(plain[0].split("_")[1])
    assert svc.set_may_init("t1", node_id, True)["MayInit"] is True
    assert [n.may_init for n in svc.node_decisions("t1")] == [True]
    _rpc(svc, "/machine/tka/init/begin", plain, body)
    assert svc.tailnet_status("t1")["Status"] == "pending"
    with pytest.raises(NotFound):
        svc.set_may_init("t1", node_id + 100, True)
    with pytest.raises(NotFound):
        svc.set_may_init("nope", node_id, True)


def test_signature_counts_are_refused_before_verification(store: ControlStore) -> None:
    svc = ControlService(store)
    svc.create_tailnet("t1")
    who = _register(svc, "t1", may_init=True)
    # 4096 signatures by one key: refused at once, without 4096 slow checks.
    t0 = time.process_time()
    with pytest.raises(BadRequest, match="only 1 keys could sign"):
        _rpc(
            svc,
            "/machine/tka/init/begin",
            who,
            {"GenesisAUM": _b64(mixed_order_genesis(4096).to_bytes())},
        )
    assert time.process_time() - t0 < 1.0
    # Two signatures by the one key: repeated key ID.
    seed = ed25519.generate_seed()
    g = _genesis(seed, os.urandom(32))
    sig = (g.signatures or ())[0]
    doubled = g.with_signatures((sig, Signature(sig.key_id, sig.signature)))
    two_keys = State(
        disablement_values=g.state.disablement_values if g.state else (),
        keys=(*(g.state.keys if g.state else ()), Key.ed25519(os.urandom(32))),
    )
    doubled = AUM(doubled.message_kind, state=two_keys)
    doubled = doubled.with_signatures((sig, sig))
    with pytest.raises(BadRequest, match="repeat key ID"):
        _rpc(svc, "/machine/tka/init/begin", who, {"GenesisAUM": _b64(doubled.to_bytes())})
    # And in sync/send: an AUM whose signatures repeat a key ID.
    secret = os.urandom(32)
    genesis = _enable(svc, who, seed, secret)
    node_store = MemoryStore()
    node = Authority.bootstrap(node_store, genesis)
    b = UpdateBuilder(node, Signer((seed,)))
    b.add_key(Key.ed25519(ed25519.public_from_seed(ed25519.generate_seed())))
    aum = b.finalize(node_store)[0]
    s0 = (aum.signatures or ())[0]
    twice = aum.with_signatures((s0, s0))
    with pytest.raises(BadRequest, match="MissingAUMs\\[0\\]: signatures repeat"):
        _rpc(
            svc,
            "/machine/tka/sync/send",
            who,
            {"Head": twice.hash_text, "MissingAUMs": [_b64(twice.to_bytes())]},
        )
    # The honest one is kept.
    out = _rpc(
        svc,
        "/machine/tka/sync/send",
        who,
        {"Head": aum.hash_text, "MissingAUMs": [_b64(aum.to_bytes())]},
    )
    assert out["Head"] == aum.hash_text


def test_disable_is_rate_limited_per_node(store: ControlStore) -> None:
    svc = ControlService(store)
    svc.create_tailnet("t1")
    who = _register(svc, "t1", may_init=True)
    other = _register(svc, "t1")
    secret = os.urandom(32)
    genesis = _enable(svc, who, ed25519.generate_seed(), secret)
    wrong = {"Head": genesis.hash_text, "DisablementSecret": _b64(os.urandom(32))}
    for _ in range(DISABLE_ATTEMPTS):
        with pytest.raises(Forbidden, match="does not match"):
            _rpc(svc, "/machine/tka/disable", who, wrong)
    with pytest.raises(TooManyRequests, match="too many disablement attempts"):
        _rpc(svc, "/machine/tka/disable", who, wrong)
    # Another node has its own budget; the right secret then works.
    right = {"Head": genesis.hash_text, "DisablementSecret": _b64(secret)}
    assert _rpc(svc, "/machine/tka/disable", other, right) == {}
    # Without a valid token, no Argon2 at all (and so no budget used).
    t0 = time.process_time()
    for _ in range(10):
        with pytest.raises(Unauthenticated):
            svc.handle(
                "/machine/tka/disable",
                "tkanode_1_" + "A" * 43,
                {"NodeKey": who[1].text(), **right},
                RequestContext(),
            )
    assert time.process_time() - t0 < 0.3


def test_tokens_remint_and_admin_revoke(store: ControlStore) -> None:
    svc = ControlService(store)
    svc.create_tailnet("t1")
    token, key = _register(svc, "t1")
    node_id = int(token.split("_")[1])
    assert svc.authenticate_node(token).node_id == node_id
    assert svc.token_recently_valid(token) == ("t1", node_id)
    out = svc.remint_node_token("t1", node_id)
    new = str(out["Token"])
    assert new != token and out["NodeID"] == node_id
    # The pre-check may still remember the old token; the RPC itself refuses it.
    with pytest.raises(Unauthenticated):
        _rpc(svc, "/machine/map", (token, key), {})
    with pytest.raises(Unauthenticated):
        svc.authenticate_node(token)
    assert _rpc(svc, "/machine/map", (new, key), {})["Node"]["ID"] == node_id
    with pytest.raises(NotFound):
        svc.remint_node_token("t1", node_id + 1)

    first = svc.mint_admin_token("ops")
    second = svc.mint_admin_token("ci")
    listed = svc.admin_tokens()
    assert [(t["Label"], set(t)) for t in listed] == [
        ("ops", {"ID", "Label", "Created"}),
        ("ci", {"ID", "Label", "Created"}),
    ]
    assert second.split("_", 2)[-1] not in repr(listed)
    svc.authenticate_admin(second)
    svc.revoke_admin_token(int(second.split("_")[1]))
    with pytest.raises(Unauthenticated):
        svc.authenticate_admin(second)
    svc.authenticate_admin(first)
    with pytest.raises(NotFound):
        svc.revoke_admin_token(int(second.split("_")[1]))


def test_a_version_1_sqlite_store_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    s = open_store(f"sqlite:///{path}")
    svc = ControlService(s)
    svc.create_tailnet("t1")
    token, _ = _register(svc, "t1", may_init=True)
    s.close()
    # Make it what version 1 wrote: no may_init column.
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE nodes DROP COLUMN may_init")
    conn.execute("UPDATE tka_control_meta SET value = '1' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    s = open_store(f"sqlite:///{path}")
    try:
        svc = ControlService(s)
        node = svc.authenticate_node(token)
        assert node.may_init is False  # nobody may init until an admin says so
    finally:
        s.close()
    conn = sqlite3.connect(path)
    (version,) = conn.execute(
        "SELECT value FROM tka_control_meta WHERE name = 'schema_version'"
    ).fetchone()
    conn.close()
    assert int(version) == SCHEMA_VERSION  # upgraded to the current version


def test_verification_does_not_hold_the_write_lock(tmp_path: Path) -> None:
    """While one tailnet's genesis takes ~1 s to verify, another tailnet's writes go on."""
    store = open_store(f"sqlite:///{tmp_path}/control.db")
    try:
        svc = ControlService(store)
        svc.create_tailnet("slow")
        svc.create_tailnet("fast")
        who = _register(svc, "slow", may_init=True)
        worst = mixed_order_genesis_distinct(512)
        done = threading.Event()
        errors: list[BaseException] = []

        def attacker() -> None:
            try:
                _rpc(svc, "/machine/tka/init/begin", who, {"GenesisAUM": _b64(worst.to_bytes())})
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                done.set()

        th = threading.Thread(target=attacker)
        th.start()
        latencies = []
        while not done.is_set():
            t0 = time.monotonic()
            _register(svc, "fast")
            latencies.append(time.monotonic() - t0)
        th.join()
        assert not errors, errors
        assert latencies, "the verification finished before any write"
        print(
            f"\n{len(latencies)} writes to another tailnet during the verification, "
            f"worst {max(latencies) * 1000:.1f} ms"
        )
        assert max(latencies) < 0.5
        assert svc.tailnet_status("slow")["Status"] == "pending"
    finally:
        store.close()
