"""Map sessions: a poll that names the map it holds gets only what changed since.

Against the real ``tka serve`` on loopback: whatever changes between two
polls (signed nodes arriving, leaving, re-signed; unsigned ones arriving),
the map a client rebuilds from the delta is the whole map the service
answers at that moment, from every earlier map it could hold; and a poll
the service cannot answer with a delta gets the whole map.
"""

from __future__ import annotations

import base64
import json
import os
import random
import urllib.request
from pathlib import Path
from typing import Any

from _server_harness import ServerProcess

from tka import ed25519
from tka.authority import Authority, Signer
from tka.control import wire
from tka.control.client import ControlClient
from tka.control.service import ControlService, RequestContext
from tka.control.store import open_store
from tka.key import Key
from tka.nlkeys import NodePublic
from tka.sig import sign_direct
from tka.state import State
from tka.storage.memory import MemoryStore


class _Tailnet:
    """A lock-enabled tailnet changed through the service, on the store the server uses."""

    def __init__(self, url: str, signed: int = 0) -> None:
        self.store = open_store(url)
        self.svc = ControlService(self.store)
        self.seed = ed25519.generate_seed()
        self.nodes: dict[int, tuple[str, NodePublic]] = {}
        self.svc.create_tailnet("t")
        first = self.register(may_init=True)
        _, genesis = Authority.create(
            MemoryStore(),
            State(None, (bytes(32),), (Key.ed25519(ed25519.public_from_seed(self.seed)),), 1, 2),
            Signer((self.seed,)),
        )
        self.rpc(
            first,
            "/machine/tka/init/begin",
            {"GenesisAUM": base64.b64encode(genesis.to_bytes()).decode()},
        )
        self.rpc(first, "/machine/tka/init/finish", {"Signatures": {str(first): self.sig(first)}})
        self.first = first
        for _ in range(signed):
            self.sign(self.register())

    def register(self, may_init: bool = False) -> int:
        key = NodePublic(os.urandom(32))
        req = wire.AdminRegisterRequest(key, b"", b"", f"n{len(self.nodes)}", may_init)
        out = self.svc.register_node("t", req)
        self.nodes[int(out["NodeID"])] = (str(out["Token"]), key)
        return int(out["NodeID"])

    def sig(self, node_id: int) -> str:
        raw = sign_direct(self.seed, self.nodes[node_id][1].raw).to_bytes()
        return base64.b64encode(raw).decode()

    def rpc(self, node_id: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
        token, key = self.nodes[node_id]
        doc = {"NodeKey": key.text(), **body}
        out: dict[str, Any] = self.svc.handle(path, token, doc, RequestContext())
        return out

    def sign(self, node_id: int) -> None:
        self.rpc(self.first, "/machine/tka/sign", {"Signature": self.sig(node_id)})

    def delete(self, node_id: int) -> None:
        self.svc.delete_node("t", node_id)
        del self.nodes[node_id]


def _raw_map(url: str, token: str, key: NodePublic, since: wire.MapResponse | None) -> Any:
    body: dict[str, Any] = {"NodeKey": key.text()}
    if since is not None:
        body |= {"MapSessionHandle": since.map_session_handle, "MapSessionSeq": since.seq}
    req = urllib.request.Request(f"{url}/machine/map", json.dumps(body).encode(), method="POST")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _peers(m: wire.MapResponse) -> dict[int, tuple[bytes, bytes]]:
    out = {}
    for p in m.peers:
        assert p.key is not None
        out[p.id] = (p.key.raw, p.key_signature)
    assert len(out) == len(m.peers), "a peer listed twice"
    return out


def test_a_delta_rebuilds_the_whole_map_from_every_earlier_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    t = _Tailnet(url, signed=12)
    try:
        with ServerProcess(url, str(tmp_path)) as srv:
            me = t.first
            client = ControlClient(srv.url, t.nodes[me][0], t.nodes[me][1])
            held: list[wire.MapResponse] = [client.map()]
            assert held[0].map_session_handle and held[0].seq > 0
            assert len(held[0].peers) == 12

            # Nothing changed: the answer names the map and carries no peers at all.
            raw = _raw_map(srv.url, *t.nodes[me], held[0])
            assert "Peers" not in raw and "PeersChanged" not in raw and "PeersRemoved" not in raw
            assert raw["Seq"] == held[0].seq and raw["Node"]["ID"] == me
            assert raw["TKAInfo"]["Head"]

            rng = random.Random(20261208)
            deltas_with_changes = 0
            for step in range(25):
                action = rng.choice(["sign-new", "unsigned", "delete", "resign", "nothing"])
                signed = [n for n in t.nodes if n != me]
                if action == "sign-new":
                    t.sign(t.register())
                elif action == "unsigned":
                    t.register()
                elif action == "delete" and signed:
                    t.delete(rng.choice(signed))
                elif action == "resign" and signed:
                    # A node's key moves (a new signature for a new key): its entry changes.
                    victim = rng.choice(signed)
                    token, _ = t.nodes[victim]
                    new_key = NodePublic(os.urandom(32))
                    sig = sign_direct(t.seed, new_key.raw).to_bytes()
                    t.rpc(
                        victim,
                        "/machine/register",
                        {
                            "NodeKey": new_key.text(),
                            "OldNodeKey": t.nodes[victim][1].text(),
                            "NodeKeySignature": base64.b64encode(sig).decode(),
                        },
                    )
                    t.nodes[victim] = (token, new_key)
                whole = client.map()
                assert me not in _peers(whole)
                for base in held[-6:]:
                    rebuilt = client.map(since=base)
                    assert _peers(rebuilt) == _peers(whole), (step, action, base.seq)
                    assert rebuilt.seq == whole.seq
                    assert rebuilt.tka_info == whole.tka_info
                    raw = _raw_map(srv.url, *t.nodes[me], base)
                    if base.seq < whole.seq and "Peers" not in raw:
                        changed = {p["ID"] for p in raw.get("PeersChanged", [])}
                        assert me not in changed and me not in raw.get("PeersRemoved", [])
                        # Only what differs travels.
                        before, now = _peers(base), _peers(whole)
                        differs = {i for i in now if before.get(i) != now[i]}
                        assert changed == differs
                        assert set(raw.get("PeersRemoved", [])) == set(before) - set(now)
                        deltas_with_changes += bool(changed or raw.get("PeersRemoved"))
                held.append(whole)
            assert deltas_with_changes >= 20
    finally:
        t.store.close()


def test_a_poll_the_service_cannot_answer_with_a_delta_gets_the_whole_map(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    t = _Tailnet(url, signed=3)
    try:
        with ServerProcess(url, str(tmp_path)) as srv:
            token, key = t.nodes[t.first]
            first = ControlClient(srv.url, token, key).map()
            for handle, seq in [
                ("not-this-session", first.seq),  # another session
                (first.map_session_handle, first.seq + 1),  # ahead of the service
                (first.map_session_handle, 1),  # older than anything kept
                (first.map_session_handle, -5),
            ]:
                since = wire.MapResponse(map_session_handle=handle, seq=seq)
                raw = _raw_map(srv.url, token, key, since)
                assert len(raw["Peers"]) == 3 and raw["Seq"] == first.seq, (handle, seq)
                assert "PeersChanged" not in raw
            # A fresh server process keeps no history: the whole map, which is always right.
        with ServerProcess(url, str(tmp_path)) as srv:
            t.sign(t.register())
            raw = _raw_map(srv.url, token, key, first)
            assert len(raw["Peers"]) == 4 and raw["Seq"] > first.seq
    finally:
        t.store.close()


def test_apply_map_delta_refuses_a_delta_of_another_session() -> None:
    base = wire.MapResponse(map_session_handle="a", seq=5)
    other = wire.MapResponse(map_session_handle="b", seq=6, delta=True)
    older = wire.MapResponse(map_session_handle="a", seq=4, delta=True)
    for bad in (other, older):
        try:
            wire.apply_map_delta(base, bad)
        except wire.BadRequest:
            continue
        raise AssertionError("accepted a delta that does not follow its map")


def test_the_client_reads_a_map_over_a_mebibyte_and_its_deltas(tmp_path: Path) -> None:
    """4,000 admitted peers: about 1.2 MB whole (the client once refused over 1 MiB)."""
    from tka.control.store import NodeRow

    url = f"sqlite:///{tmp_path}/control.db"
    t = _Tailnet(url)
    try:
        with t.store.write("t") as txn:
            for i in range(4000):
                key = os.urandom(32)
                txn.insert_node(
                    NodeRow(
                        0,
                        "t",
                        key,
                        bytes(32),
                        name=f"bulk{i}",
                        signature=sign_direct(t.seed, key).to_bytes(),
                    )
                )
        with ServerProcess(url, str(tmp_path)) as srv:
            token, key = t.nodes[t.first]
            client = ControlClient(srv.url, token, key)
            whole = client.map()
            assert len(whole.peers) == 4000
            assert len(json.dumps(wire.encode(whole))) > 1024 * 1024
            late = t.register()
            t.sign(late)
            after = client.map(since=whole)
            assert len(after.peers) == 4001 and late in _peers(after)
            raw = _raw_map(srv.url, token, key, whole)
            assert [p["ID"] for p in raw["PeersChanged"]] == [late]
    finally:
        t.store.close()


def test_a_delta_too_large_to_be_worth_it_is_the_whole_map(tmp_path: Path) -> None:
    """More than 64 peers changed since (a sixteenth of a small tailnet's floor): whole."""
    url = f"sqlite:///{tmp_path}/control.db"
    t = _Tailnet(url, signed=80)
    try:
        with ServerProcess(url, str(tmp_path)) as srv:
            token, key = t.nodes[t.first]
            client = ControlClient(srv.url, token, key)
            held = client.map()
            gone = [n for n in t.nodes if n != t.first][:70]
            seen = []
            for node_id in gone:
                t.delete(node_id)
                seen.append(client.map())  # a build per change: the history follows
            recent = _raw_map(srv.url, token, key, seen[-10])
            assert "Peers" not in recent and len(recent["PeersRemoved"]) == 9
            raw = _raw_map(srv.url, token, key, held)
            assert "PeersRemoved" not in raw and len(raw["Peers"]) == 10
            assert _peers(client.map(since=held)) == _peers(client.map())
    finally:
        t.store.close()
