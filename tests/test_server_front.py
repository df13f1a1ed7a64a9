"""The front API of ``tka serve`` (integrations/headscale/FRONT-API.md), driven as a front would.

A real ``tka serve`` on loopback (SQLite and PostgreSQL), front tokens minted
with the CLI, nodes fed over HTTP with the front's own node IDs, their TKA
RPCs relayed with ``Tka-Node-Id``, node keys and signatures made with the tka
library; the bulk read, the long-polled change feed, and two replicas on one
database sharing the sequence number.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import stat
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from _server_harness import PostgresProvider, ServerProcess, tka_command

from tka import ed25519
from tka.aum import AUM
from tka.authority import Authority, Signer
from tka.control.service import ControlService, FrontCaller, RequestContext
from tka.control.store import NodeRow, open_store
from tka.key import Key
from tka.nlkeys import NLPublic, NodePublic
from tka.sig import sign_direct
from tka.state import State
from tka.storage.memory import MemoryStore

BIG_ID = 2**64 - 1  # Headscale's NodeID is a uint64


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, pg: PostgresProvider) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/control.db"
    if pg.unavailable:
        pytest.skip(f"PostgreSQL: {pg.unavailable}")
    return pg.new_database()


# -- helpers ---------------------------------------------------------------------------------


def run_cli(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*tka_command(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    if ok:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def call(
    server: ServerProcess,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw else None
    finally:
        conn.close()


class Front:
    """What a patched Headscale does, over HTTP."""

    def __init__(self, server: ServerProcess, tailnet: str, token: str) -> None:
        self.server, self.tailnet, self.token = server, tailnet, token

    def path(self, rest: str) -> str:
        return f"/front/v1/tailnets/{self.tailnet}{rest}"

    def put(self, node_id: int, node_key: bytes, nl_key: bytes = b"", sig: bytes = b"") -> Any:
        status, out = call(
            self.server,
            "PUT",
            self.path(f"/nodes/{node_id}"),
            self.token,
            {
                "NodeKey": NodePublic(node_key).text(),
                "NLKey": NLPublic(nl_key).text() if nl_key else "",
                "KeySignature": base64.b64encode(sig).decode(),
            },
        )
        assert status == 200, out
        return out

    def delete(self, node_id: int) -> Any:
        status, out = call(self.server, "DELETE", self.path(f"/nodes/{node_id}"), self.token)
        assert status == 200, out
        return out

    def relay(self, node_id: int, rpc: str, body: dict[str, Any]) -> tuple[int, Any]:
        return call(
            self.server,
            "POST",
            self.path(f"/machine/tka/{rpc}"),
            self.token,
            body,
            {"Tka-Node-Id": str(node_id)},
        )

    def state(self) -> Any:
        status, out = call(self.server, "GET", self.path("/state"), self.token)
        assert status == 200, out
        return out

    def changes(self, since: int, wait: int = 0) -> Any:
        status, out = call(
            self.server,
            "GET",
            self.path(f"/changes?since={since}&wait={wait}"),
            self.token,
            timeout=wait + 30,
        )
        assert status == 200, out
        return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def nodekey() -> bytes:
    return os.urandom(32)


def genesis(signer_seed: bytes, publics: list[bytes]) -> AUM:
    ids = os.urandom(16)
    state = State(
        disablement_values=(bytes(32),),
        keys=tuple(Key.ed25519(p) for p in publics),
        state_id1=int.from_bytes(ids[:8], "little"),
        state_id2=int.from_bytes(ids[8:], "little"),
    )
    _, g = Authority.create(MemoryStore(), state, Signer((signer_seed,)))
    return g


def start_long_poll(front: Front, since: int, wait: int) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def poll() -> None:
        start = time.monotonic()
        box["answer"] = front.changes(since, wait)
        box["seconds"] = time.monotonic() - start

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    return th, box


def setup(tmp_path: Path, store_url: str) -> dict[str, str]:
    admin = tmp_path / "admin.token"
    env = {**os.environ, "TKA_ADMIN_TOKEN_FILE": str(admin)}
    env.pop("TKA_CONTROL_URL", None)
    run_cli(env, "control", "admin-token", "--store", store_url, "--out", str(admin))
    return env


# -- the whole flow --------------------------------------------------------------------------


def test_a_front_feeds_relays_reads_and_follows_changes(store_url: str, tmp_path: Path) -> None:
    env = setup(tmp_path, store_url)
    with ServerProcess(store_url, str(tmp_path)) as server:
        env["TKA_CONTROL_URL"] = server.url
        for name in ("t1", "t2"):
            run_cli(env, "control", "create-tailnet", name)
        # Minted over the admin API, and directly in the store.
        tok_file = Path(tmp_path / "front.token")
        out = run_cli(env, "control", "front-token", "t1", "--label", "hs", "--out", str(tok_file))
        token = tok_file.read_text().strip()
        assert token.startswith("tkafront-") and token not in out.stdout + out.stderr
        assert stat.S_IMODE(tok_file.stat().st_mode) == 0o600
        other_file = tmp_path / "t2.token"
        run_cli(env, "control", "front-token", "t2", "--store", store_url, "--out", str(other_file))
        other = other_file.read_text().strip()
        printed = run_cli(env, "control", "front-token", "t2", "--out", "-").stdout.strip()
        assert printed.startswith("tkafront-")
        listed = json.loads(run_cli(env, "control", "front-tokens", "--json").stdout)
        assert [(t["Tailnet"], t["Label"]) for t in listed] == [
            ("t1", "hs"),
            ("t2", ""),
            ("t2", ""),
        ]
        assert token.split("-", 2)[2] not in json.dumps(listed)
        assert len(json.loads(run_cli(env, "control", "front-tokens", "t2", "--json").stdout)) == 2
        _flow(server, env, token, other)


def _flow(server: ServerProcess, env: dict[str, str], token: str, other: str) -> None:
    front = Front(server, "t1", token)
    admin_token = Path(env["TKA_ADMIN_TOKEN_FILE"]).read_text().strip()

    # -- who may call: refused before any body is read.
    state_path = front.path("/state")
    for bad, status in (
        (None, 401),
        (token[:-4] + "AAAA", 401),
        (admin_token, 401),
        ("tkafront-999-" + token.split("-", 2)[2], 401),
        (other, 403),  # a front token for t2
    ):
        got, out = call(server, "GET", state_path, bad)
        assert got == status, (bad, got, out)
        assert set(out) == {"error", "message"}
        big = call(server, "PUT", front.path("/nodes/1"), bad, {"NodeKey": "x" * 500_000})
        assert big[0] == status
    # A front token is no admin token.
    assert call(server, "GET", "/admin/tailnets", token)[0] == 401
    assert call(server, "POST", "/admin/tailnets", token, {"Name": "t9"})[0] == 401

    # -- node feed, lock off: nodes are kept unsigned.
    signer_seed = ed25519.generate_seed()
    signer_pub = ed25519.public_from_seed(signer_seed)
    keys = {1: nodekey(), 2: nodekey(), BIG_ID: nodekey()}
    seq0 = front.state()["Seq"]
    first = front.put(1, keys[1], nl_key=signer_pub)
    assert first == {"NodeID": 1, "Admitted": True, "KeySignature": "", "Seq": seq0}
    assert front.put(1, keys[1], nl_key=signer_pub) == first  # idempotent
    for i in (2, BIG_ID):
        assert front.put(i, keys[i])["NodeID"] == i
    assert front.state() == {
        "Seq": seq0,
        "Enabled": False,
        "Disabled": False,
        "Head": "",
        "Signatures": {},
    }
    # The same node key for another node is refused.
    status, out = call(
        server,
        "PUT",
        front.path("/nodes/3"),
        token,
        {"NodeKey": NodePublic(keys[2]).text(), "NLKey": "", "KeySignature": ""},
    )
    assert status == 409 and out["error"] == "conflict"

    # -- relay: init/begin and init/finish from node 1.
    g = genesis(signer_seed, [signer_pub])
    nk1 = NodePublic(keys[1]).text()
    # A body naming another node's key is refused.
    status, out = front.relay(
        1, "init/begin", {"NodeKey": NodePublic(keys[2]).text(), "GenesisAUM": b64(g.to_bytes())}
    )
    assert status == 403, out
    # A node the front never fed is refused too.
    assert front.relay(77, "bootstrap", {"NodeKey": nk1})[0] == 403
    assert front.relay(1, "map", {"NodeKey": nk1})[0] == 404
    assert front.relay(1, "init/begin", {"NodeKey": nk1})[0] == 400
    status, out = call(
        server, "POST", front.path("/machine/tka/bootstrap"), token, {"NodeKey": nk1}
    )
    assert status == 400 and "Tka-Node-Id" in out["message"]
    status, begun = front.relay(1, "init/begin", {"NodeKey": nk1, "GenesisAUM": b64(g.to_bytes())})
    assert status == 200, begun
    need = begun["NeedSignatures"]
    assert {n["NodePublic"] for n in need} == {NodePublic(k).text() for k in keys.values()}
    sigs = {
        n["NodeID"]: sign_direct(signer_seed, NodePublic.from_text(n["NodePublic"]).raw).to_bytes()
        for n in need
    }
    th, box = start_long_poll(front, seq0, 30)
    time.sleep(0.5)
    assert th.is_alive()  # nothing changed yet: the poll waits
    status, out = front.relay(
        1,
        "init/finish",
        {"NodeKey": nk1, "Signatures": {str(i): b64(s) for i, s in sigs.items()}},
    )
    assert status == 200, out
    th.join(10)
    assert not th.is_alive()
    change = box["answer"]
    assert box["seconds"] < 5
    assert change["Enabled"] and change["HeadChanged"] and not change["Reset"]
    assert change["Head"] == g.hash_text and change["Seq"] > seq0
    by_key = {NodePublic.from_text(n["NodePublic"]).raw: n["NodeID"] for n in need}
    want = {str(i): b64(sigs[by_key[k]]) for i, k in keys.items()}
    assert change["Signatures"] == want
    state = front.state()
    assert state == {
        "Seq": change["Seq"],
        "Enabled": True,
        "Disabled": False,
        "Head": g.hash_text,
        "Signatures": want,
    }
    seq1 = state["Seq"]
    # Admins see fed nodes; a fed node has no token to re-mint.
    nodes = json.loads(run_cli(env, "control", "nodes", "t1", "--json").stdout)
    assert {n["Name"] for n in nodes} == {f"front node {i}" for i in keys}
    assert all(n["Admitted"] for n in nodes)
    refused = run_cli(
        env, "control", "remint-token", "t1", str(nodes[0]["NodeID"]), "--out", "-", ok=False
    )
    assert refused.returncode == 1 and "fed by a front" in refused.stderr
    # Malformed feeds and unknown paths: 4xx in the front's error shape.
    for body in (
        {"NodeKey": "nodekey:00"},
        {"NodeKey": nk1, "KeySignature": "not base64!"},
        {"NodeKey": nk1, "NLKey": "tlpub:zz"},
        [1],
    ):
        got, out = call(server, "PUT", front.path("/nodes/1"), token, body)
        assert got == 400 and set(out) == {"error", "message"}, (body, out)
    got, out = call(server, "PUT", front.path(f"/nodes/{2**64}"), token, {"NodeKey": nk1})
    assert got == 400
    got, out = call(server, "GET", front.path("/nope"), token)
    assert got == 404 and out["error"] == "not_found" and "message" in out

    # -- the feed keeps only signatures that admit the node under the head.
    forger = ed25519.generate_seed()
    k4 = nodekey()
    fed = front.put(4, k4, sig=sign_direct(forger, k4).to_bytes())
    assert fed["Admitted"] is False and fed["KeySignature"] == "" and fed["Seq"] == seq1
    wrong_key = front.put(6, nodekey(), sig=sign_direct(signer_seed, k4).to_bytes())
    assert wrong_key["Admitted"] is False and wrong_key["KeySignature"] == ""
    k5 = nodekey()
    good = sign_direct(signer_seed, k5).to_bytes()
    fed5 = front.put(5, k5, sig=good)  # a pre-signed auth key's signature
    assert fed5["Admitted"] is True and fed5["KeySignature"] == b64(good)
    assert fed5["Seq"] > seq1
    assert front.put(5, k5, sig=good) == fed5  # idempotent
    assert "4" not in front.state()["Signatures"]
    assert front.state()["Signatures"]["5"] == b64(good)

    # -- sign through the relay: a forged signature is refused, a real one kept.
    seq2 = front.state()["Seq"]
    status, out = front.relay(
        1, "sign", {"NodeKey": nk1, "Signature": b64(sign_direct(forger, k4).to_bytes())}
    )
    assert status == 422, out
    assert front.changes(seq2)["Signatures"] == {}
    sig4 = sign_direct(signer_seed, k4).to_bytes()
    th, box = start_long_poll(front, seq2, 30)
    time.sleep(0.3)
    status, out = front.relay(1, "sign", {"NodeKey": nk1, "Signature": b64(sig4)})
    assert status == 200, out
    th.join(10)
    assert box["answer"]["Signatures"] == {"4": b64(sig4)}
    assert box["answer"]["HeadChanged"] is False
    # Other relayed RPCs answer as in token mode.
    status, out = front.relay(1, "bootstrap", {"NodeKey": nk1})
    assert status == 200 and AUM.from_bytes(base64.b64decode(out["GenesisAUM"])).hash == g.hash
    status, out = front.relay(
        2, "sync/offer", {"NodeKey": NodePublic(keys[2]).text(), "Head": g.hash_text}
    )
    assert status == 200 and out["Head"] == g.hash_text
    status, out = front.relay(1, "affected-sigs", {"NodeKey": nk1, "KeyID": b64(signer_pub)})
    assert status == 200 and len(out["Signatures"]) == 5

    # -- a re-key without a signature leaves the node unsigned; deletion removes it.
    seq3 = front.state()["Seq"]
    rekeyed = front.put(2, nodekey())
    assert rekeyed["Admitted"] is False and rekeyed["KeySignature"] == ""
    gone = front.delete(5)
    assert gone["Seq"] > rekeyed["Seq"] > seq3
    assert front.delete(5) == gone  # idempotent, and unknown nodes too
    assert front.delete(12345)["Seq"] == gone["Seq"]
    change = front.changes(seq3)
    assert change["Signatures"] == {"2": "", "5": ""} and not change["HeadChanged"]
    assert set(front.state()["Signatures"]) == {"1", "4", str(BIG_ID)}

    # -- the change feed: nothing new answers after wait; Reset on a seq from elsewhere.
    now = front.state()["Seq"]
    start = time.monotonic()
    quiet = front.changes(now, 1)
    assert 0.9 < time.monotonic() - start < 5
    assert quiet == {
        "Seq": now,
        "Enabled": True,
        "Disabled": False,
        "Head": g.hash_text,
        "HeadChanged": False,
        "Signatures": {},
        "Reset": False,
    }
    assert front.changes(now + 1000)["Reset"] is True
    for query in ("wait=1", "since=-1", "since=1&wait=61", "since=x"):
        status, out = call(server, "GET", front.path(f"/changes?{query}"), token)
        assert status == 400, (query, out)

    # -- relays that the batched read must not take (or must not be upset by):
    # names no tailnet has (NUL cannot even be stored by PostgreSQL), node IDs
    # out of range, another tailnet's name; answered 4xx, and an honest relay
    # made alongside is not disturbed.
    offer = {"NodeKey": nk1, "Head": g.hash_text, "Ancestors": []}
    hostile = [
        ("/front/v1/tailnets/t%001/machine/tka/sync/offer", "1"),
        ("/front/v1/tailnets/" + "x" * 300 + "/machine/tka/sync/offer", "1"),
        ("/front/v1/tailnets/t2/machine/tka/sync/offer", "1"),
        (front.path("/machine/tka/sync/offer"), str(2**64)),
        (front.path("/machine/tka/sync/offer"), "-1"),
        (front.path("/machine/tka/sync/offer"), "99999"),
    ]
    for hpath, hid in hostile:
        status, out = call(server, "POST", hpath, token, offer, {"Tka-Node-Id": hid})
        assert 400 <= status < 500, (hpath[:60], hid, status, out)
        assert front.relay(1, "sync/offer", offer)[0] == 200

    # -- revocation: the token stops working at once.
    listed = json.loads(run_cli(env, "control", "front-tokens", "t1", "--json").stdout)
    token_id = int(token.split("-")[1])
    assert token_id in {t["ID"] for t in listed}
    run_cli(env, "control", "revoke-front-token", str(token_id))
    assert call(server, "GET", state_path, token)[0] == 401
    assert front.relay(1, "bootstrap", {"NodeKey": nk1})[0] == 401
    assert run_cli(env, "control", "revoke-front-token", str(token_id), ok=False).returncode != 0


# -- several replicas on one database ----------------------------------------------------------


def test_replicas_on_one_database_share_the_sequence(store_url: str, tmp_path: Path) -> None:
    env = setup(tmp_path, store_url)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        ServerProcess(store_url, str(tmp_path / "a")) as a,
        ServerProcess(store_url, str(tmp_path / "b")) as b,
    ):
        env["TKA_CONTROL_URL"] = a.url
        run_cli(env, "control", "create-tailnet", "t1")
        token_file = tmp_path / "front.token"
        run_cli(env, "control", "front-token", "t1", "--out", str(token_file))
        token = token_file.read_text().strip()
        fa, fb = Front(a, "t1", token), Front(b, "t1", token)
        seed = ed25519.generate_seed()
        pub = ed25519.public_from_seed(seed)
        k1, k2 = nodekey(), nodekey()
        fa.put(1, k1, nl_key=pub)
        fb.put(2, k2)
        g = genesis(seed, [pub])
        nk1 = NodePublic(k1).text()
        status, begun = fa.relay(1, "init/begin", {"NodeKey": nk1, "GenesisAUM": b64(g.to_bytes())})
        assert status == 200, begun
        signatures = {
            str(n["NodeID"]): b64(
                sign_direct(seed, NodePublic.from_text(n["NodePublic"]).raw).to_bytes()
            )
            for n in begun["NeedSignatures"]
        }
        seq = fb.state()["Seq"]
        assert fa.state() == fb.state()
        # A long poll on replica b sees a change committed through replica a.
        th, box = start_long_poll(fb, seq, 30)
        time.sleep(0.5)
        status, out = fa.relay(1, "init/finish", {"NodeKey": nk1, "Signatures": signatures})
        assert status == 200, out
        th.join(10)
        assert not th.is_alive()
        assert box["seconds"] < 0.5 + 2.5  # the other replica's change seen within ~1 s
        assert box["answer"]["Enabled"] and box["answer"]["Head"] == g.hash_text
        assert set(box["answer"]["Signatures"]) == {"1", "2"}
        assert fa.state() == fb.state()
        k3 = nodekey()
        s3 = fb.put(3, k3, sig=sign_direct(seed, k3).to_bytes())
        s4 = fa.put(4, nodekey())
        assert s3["Admitted"] and s4["Seq"] == s3["Seq"] == fb.state()["Seq"]  # s4 moved nothing
        assert fa.changes(box["answer"]["Seq"])["Signatures"] == {"3": s3["KeySignature"]}


# -- the library: pruning and Reset, schema upgrade ----------------------------------------------


def test_old_removals_are_pruned_and_a_front_behind_them_is_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tka.control.store as store_mod

    monkeypatch.setattr(store_mod, "MAX_TOMBSTONES", 4)
    store = open_store(f"sqlite:///{tmp_path}/c.db")
    try:
        svc = ControlService(store)
        svc.create_tailnet("t")
        minted = svc.mint_front_token("t", "x")
        secret = minted["Token"].split("-", 2)[2]
        assert svc.front_tokens("t") == [
            {
                "ID": minted["ID"],
                "Tailnet": "t",
                "Label": "x",
                "Created": svc.front_tokens()[0]["Created"],
            }
        ]
        caller = svc.authenticate_front(minted["Token"], "t")
        assert secret not in repr(caller)
        seed = ed25519.generate_seed()
        pub = ed25519.public_from_seed(seed)
        ctx = RequestContext()
        _enable(svc, caller, seed, pub)
        base = svc.front_state("t")["Seq"]
        for i in range(10, 20):
            k = nodekey()
            out = svc.front_put_node(
                FrontCaller("t", i, caller.token_id, caller.token_hash),
                {
                    "NodeKey": NodePublic(k).text(),
                    "KeySignature": b64(sign_direct(seed, k).to_bytes()),
                },
                ctx,
            )
            assert out["Admitted"]
        assert svc.front_changes("t", base)["Signatures"].keys() == {str(i) for i in range(10, 20)}
        for i in range(10, 16):
            svc.front_delete_node(FrontCaller("t", i, caller.token_id, caller.token_hash), ctx)
        state = svc.front_state("t")
        assert set(state["Signatures"]) == {"1", "16", "17", "18", "19"}
        assert json.loads(svc.front_state_json("t")) == state
        assert svc.front_state_json("t") is svc.front_state_json("t")  # kept while seq stays
        # 6 removals, at most 4 kept: the oldest were forgotten, so a front
        # that saw none of them must re-read the state ...
        assert svc.front_changes("t", base)["Reset"] is True
        # ... while one that saw the newest still gets a delta.
        recent = svc.front_changes("t", state["Seq"] - 1)
        assert recent["Reset"] is False and recent["Signatures"] == {"15": ""}
        assert svc.front_changes("t", state["Seq"]) is None
    finally:
        store.close()


def _enable(svc: ControlService, caller: FrontCaller, seed: bytes, pub: bytes) -> None:
    ctx = RequestContext()
    me = FrontCaller("t", 1, caller.token_id, caller.token_hash)
    k = nodekey()
    svc.front_put_node(me, {"NodeKey": NodePublic(k).text(), "NLKey": NLPublic(pub).text()}, ctx)
    g = genesis(seed, [pub])
    nk = NodePublic(k).text()
    begun = svc.front_relay(me, "init/begin", {"NodeKey": nk, "GenesisAUM": b64(g.to_bytes())}, ctx)
    sigs = {
        str(n["NodeID"]): b64(
            sign_direct(seed, NodePublic.from_text(n["NodePublic"]).raw).to_bytes()
        )
        for n in begun["NeedSignatures"]
    }
    svc.front_relay(me, "init/finish", {"NodeKey": nk, "Signatures": sigs}, ctx)
    assert svc.front_state("t")["Enabled"]


def test_a_version_2_store_is_upgraded(store_url: str, tmp_path: Path) -> None:
    from tka.control.store import SCHEMA_VERSION

    store = open_store(store_url)
    svc = ControlService(store)
    svc.create_tailnet("t")
    store.close()
    # Make it what version 2 wrote: no fronts, no change sequence.
    undo = [
        "DROP TABLE rate_limits",
        "DROP TABLE sig_changes",
        "DROP TABLE front_tokens",
        "DROP INDEX nodes_by_front",
        "ALTER TABLE nodes DROP COLUMN front_id",
        "ALTER TABLE tailnets DROP COLUMN seq",
        "ALTER TABLE tailnets DROP COLUMN head_seq",
        "ALTER TABLE tailnets DROP COLUMN seq_floor",
        "UPDATE tka_control_meta SET value = '2' WHERE name = 'schema_version'",
    ]
    if store_url.startswith("sqlite:"):
        import sqlite3

        conn = sqlite3.connect(store_url[len("sqlite:///") - 1 :])
        for stmt in undo:
            conn.execute(stmt)
        conn.commit()
        conn.close()
    else:
        import psycopg

        with psycopg.connect(store_url, autocommit=True) as pconn:
            for stmt in undo:
                pconn.execute(stmt)  # type: ignore[arg-type]
    store = open_store(store_url)
    try:
        svc = ControlService(store)
        minted = svc.mint_front_token("t")
        caller = svc.authenticate_front(minted["Token"], "t", 3)
        out = svc.front_put_node(
            caller, {"NodeKey": NodePublic(nodekey()).text()}, RequestContext()
        )
        assert out["NodeID"] == 3 and out["Seq"] == 0
        assert svc.front_state("t")["Seq"] == 0
        rows = store.read()
        with rows as txn:
            version = txn.execute(
                "SELECT value FROM tka_control_meta WHERE name = 'schema_version'"
            )
        assert int(version[0][0]) == SCHEMA_VERSION == 4
    finally:
        store.close()


# -- cost -----------------------------------------------------------------------------------------


def _insert_fed_signed(txn: Any, seed: bytes, front_id: int) -> None:
    """A node fed to tailnet t as *front_id*, signed by *seed*, written straight to the store."""
    k = nodekey()
    txn.insert_node(
        NodeRow(
            node_id=0,
            tailnet="t",
            node_key=k,
            token_hash=b"",
            signature=sign_direct(seed, k).to_bytes(),
            front_id=front_id,
        )
    )


def test_state_with_10000_signatures_is_quick(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    store = open_store(url)
    try:
        svc = ControlService(store)
        svc.create_tailnet("t")
        token = svc.mint_front_token("t")["Token"]
        seed = ed25519.generate_seed()
        with store.write("t") as txn:
            for i in range(1, 10_001):
                _insert_fed_signed(txn, seed, i)
    finally:
        store.close()
    with ServerProcess(url, str(tmp_path)) as server:
        front = Front(server, "t", token)
        cold = []
        for i in range(3):
            if i:  # a new signature: a fresh answer must be built
                more = open_store(url)
                try:
                    with more.write("t") as txn:
                        _insert_fed_signed(txn, seed, 20_000 + i)
                finally:
                    more.close()
            start = time.perf_counter()
            state = front.state()
            cold.append(time.perf_counter() - start)
            assert len(state["Signatures"]) == 10_000 + i
        hot = []
        for _ in range(5):
            start = time.perf_counter()
            front.state()
            hot.append(time.perf_counter() - start)
    print(
        f"GET /state, 10,000 signatures: built {min(cold) * 1000:.1f} ms, "
        f"again {min(hot) * 1000:.1f} ms"
    )
    # The target is 50 ms (see bench/run.py, Front/state-10000); the bound here
    # leaves room for a loaded test machine.
    assert min(cold) < 0.25 and min(hot) < 0.25, (cold, hot)


def test_every_front_token_help_example_runs_as_written(tmp_path: Path) -> None:
    env = setup(tmp_path, f"sqlite:///{tmp_path}/control.db")
    with ServerProcess(f"sqlite:///{tmp_path}/control.db", str(tmp_path)) as server:
        env["TKA_CONTROL_URL"] = server.url
        run_cli(env, "control", "create-tailnet", "example")
        examples = [
            (
                ["control", "front-token"],
                "tka control front-token example --label hs --out front.token",
            ),
            (["control", "front-tokens"], "tka control front-tokens example --json"),
            (["control", "revoke-front-token"], "tka control revoke-front-token 1"),
        ]
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "tka"
        shim.write_text(f'#!/bin/sh\nexec {" ".join(tka_command())} "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        for command, example in examples:
            assert example in run_cli(env, *command, "--help").stdout, example
            proc = subprocess.run(
                example,
                shell=True,
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, (example, proc.stdout, proc.stderr)
        assert (tmp_path / "front.token").read_text().startswith("tkafront-1-")
        # The --store example, in the folder of the store this server uses.
        store_example = (
            "tka control front-token example --store sqlite:control.db --out front2.token"
        )
        assert store_example in run_cli(env, "control", "front-token", "--help").stdout
        proc = subprocess.run(
            store_example,
            shell=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        token = (tmp_path / "front2.token").read_text().strip()
        assert call(server, "GET", "/front/v1/tailnets/example/state", token)[0] == 200


def test_serve_help_lists_only_what_the_service_uses() -> None:
    out = run_cli(dict(os.environ), "serve", "--help").stdout
    for node_side in ("--state-dir", "--passphrase-file", "--lock-timeout", "--control "):
        assert node_side not in out
    assert "--store" in out and "--debug" in out


def test_a_long_poll_does_not_hold_a_graceful_shutdown(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/control.db"
    env = setup(tmp_path, store_url)
    server = ServerProcess(store_url, str(tmp_path), graceful_timeout=30).start()
    try:
        env["TKA_CONTROL_URL"] = server.url
        run_cli(env, "control", "create-tailnet", "t1")
        token_file = tmp_path / "front.token"
        run_cli(env, "control", "front-token", "t1", "--out", str(token_file))
        front = Front(server, "t1", token_file.read_text().strip())
        th, box = start_long_poll(front, front.state()["Seq"], 60)
        th.join(0.5)
        assert th.is_alive()  # the poll waits: nothing changes for 60 s
        start = time.monotonic()
        rc = server.stop(timeout=20)
        took = time.monotonic() - start
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
    th.join(5)
    assert rc == 0 and took < 5, (rc, took)
    # The poll was answered (nothing changed), not cut off.
    assert not th.is_alive() and box["answer"]["Seq"] >= 0 and box["seconds"] < 10


def test_the_batched_read_of_relayed_callers_matches_one_read_each(store_url: str) -> None:
    """``front_callers`` answers each key as the single reads would, whatever the batch mixes."""
    store = open_store(store_url)
    try:
        svc = ControlService(store)
        for name in ("t1", "t2"):
            svc.create_tailnet(name)
        tokens = {name: svc.mint_front_token(name, "hs") for name in ("t1", "t2")}
        ids = {name: int(str(tokens[name]["Token"]).split("-")[1]) for name in tokens}
        for name, front_ids in (("t1", (1, BIG_ID)), ("t2", (1,))):
            caller = svc.authenticate_front(str(tokens[name]["Token"]), name)
            for fid in front_ids:
                body = {"NodeKey": NodePublic(nodekey()).text(), "NLKey": "", "KeySignature": ""}
                svc.front_put_node(replace(caller, node_id=fid), body, RequestContext())
        keys = [
            (ids["t1"], "t1", 1),
            (ids["t1"], "t1", BIG_ID),
            (ids["t1"], "t1", 7),  # never fed
            (ids["t2"], "t2", 1),
            (ids["t2"], "t1", 1),  # t2's token, t1's node
            (ids["t1"] + ids["t2"], "t1", 1),  # no such token
            (ids["t1"], "nope", 1),  # no such tailnet
        ]
        got = store.front_callers(keys)
        assert set(got) == set(keys)
        with store.read() as txn:
            for key in keys:
                token_id, name, fid = key
                token, node, tailnet = got[key]
                assert token == txn.front_token(token_id), key
                if token is None:
                    continue  # refused on the token: what else was read does not matter
                assert node == txn.front_node(name, fid), key
                if node is not None:
                    assert tailnet == txn.tailnet(name), key
    finally:
        store.close()
