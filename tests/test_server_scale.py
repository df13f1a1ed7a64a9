"""Scale: admin listings page (a 100,000-node tailnet through the real CLI and server),
and map's per-tailnet cache follows every change that moves its answer."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from _server_harness import ServerProcess, mint_admin, tka_command

from tka import ed25519
from tka.control.service import ControlService, RequestContext
from tka.control.service.admin import MAX_NODE_PAGE
from tka.control.store import NodeRow, open_store
from tka.sig import sign_direct

N = 100_000


def _fill(store_url: str, n: int) -> None:
    store = open_store(store_url)
    try:
        ControlService(store).create_tailnet("big")
        with store.write("big") as txn:
            txn.execute(
                "INSERT INTO nodes (tailnet, node_key, token_hash, name, created, updated, "
                "may_init) VALUES " + ",".join(["(?, ?, ?, ?, 0, 0, 0)"] * 1),
                ("big", os.urandom(32), b"", "n0"),
            )
            txn._conn.executemany(  # one transaction, one statement: cheap rows
                "INSERT INTO nodes (tailnet, node_key, token_hash, name, created, updated, "
                "may_init) VALUES (?, ?, ?, ?, 0, 0, 0)",
                [("big", os.urandom(32), b"", f"n{i}") for i in range(1, n)],
            )
    finally:
        store.close()


def test_nodes_lists_a_100k_tailnet_page_by_page(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/control.db"
    _fill(url, N)
    token_file = tmp_path / "admin.token"
    token_file.write_text(mint_admin(url))
    srv = ServerProcess(url, str(tmp_path)).start()
    try:
        env = dict(os.environ, TKA_CONTROL_URL=srv.url, TKA_ADMIN_TOKEN_FILE=str(token_file))
        out = subprocess.run(
            [*tka_command(), "control", "nodes", "big", "--json"],
            capture_output=True,
            env=env,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        nodes = json.loads(out.stdout)
        assert len(nodes) == N
        assert [n["NodeID"] for n in nodes] == sorted({n["NodeID"] for n in nodes})
        # Text mode and locked-out (none: lock is off) go through the same pages.
        text = subprocess.run(
            [*tka_command(), "control", "nodes", "big"], capture_output=True, env=env, timeout=120
        )
        assert text.returncode == 0 and text.stdout.count(b"\n") == N + 1
        lo = subprocess.run(
            [*tka_command(), "control", "locked-out", "big", "--json"],
            capture_output=True,
            env=env,
            timeout=120,
        )
        assert lo.returncode == 0 and json.loads(lo.stdout) == []
        # Each answer is one bounded page, whatever the tailnet's size.
        import urllib.request

        def page(query: str) -> tuple[int, bytes]:
            req = urllib.request.Request(f"{srv.url}/admin/tailnets/big/nodes?{query}")
            req.add_header("Authorization", f"Bearer {token_file.read_text().strip()}")
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        code, raw = page("")
        doc = json.loads(raw)
        assert code == 200 and len(doc["Nodes"]) == 1000 and doc["Next"] > 0
        assert len(raw) < 1024 * 1024
        code, raw = page(f"limit={MAX_NODE_PAGE}")
        assert code == 200 and len(json.loads(raw)["Nodes"]) == MAX_NODE_PAGE
        assert len(raw) < 4 * 1024 * 1024
        assert page(f"limit={MAX_NODE_PAGE + 1}")[0] == 400
        assert page("after=x")[0] == 400
    finally:
        srv.stop()


def test_map_follows_every_change_of_its_answer(tmp_path: Path) -> None:
    from tka.control import wire
    from tka.nlkeys import NodePublic

    store = open_store(f"sqlite:///{tmp_path}/c.db")
    try:
        svc = ControlService(store)
        svc.create_tailnet("t")
        seed = ed25519.generate_seed()
        from tka.aum import AUM  # noqa: F401
        from tka.authority import Authority, Signer
        from tka.key import Key
        from tka.state import State
        from tka.storage.memory import MemoryStore

        _, genesis = Authority.create(
            MemoryStore(),
            State(None, (bytes(32),), (Key.ed25519(ed25519.public_from_seed(seed)),), 1, 2),
            Signer((seed,)),
        )
        members = []

        def register(i: int) -> None:
            k = NodePublic(os.urandom(32))
            out = svc.register_node("t", wire.AdminRegisterRequest(k, b"", b"", f"n{i}", True))
            members.append((out["NodeID"], out["Token"], k))

        register(0)
        register(1)
        import base64

        def rpc(who: int, path: str, body: dict[str, object]) -> dict[str, object]:
            _, tok, k = members[who]
            return svc.handle(path, tok, {"NodeKey": k.text(), **body}, RequestContext())

        def peers(who: int) -> set[int]:
            nid, tok, k = members[who]
            raw = svc.map_json(tok, {"NodeKey": k.text()}, RequestContext())
            doc = json.loads(raw)
            lib = wire.encode(svc.map(tok, wire.MapRequest(0, k), RequestContext()))
            assert doc == json.loads(json.dumps(lib))
            assert doc["Node"]["ID"] == nid
            return {p["ID"] for p in doc["Peers"]}

        assert peers(0) == {members[1][0]}  # lock off: everyone
        rpc(
            0,
            "/machine/tka/init/begin",
            {"GenesisAUM": base64.b64encode(genesis.to_bytes()).decode()},
        )
        sig = {
            str(members[i][0]): base64.b64encode(
                sign_direct(seed, members[i][2].raw).to_bytes()
            ).decode()
            for i in (0, 1)
        }
        rpc(0, "/machine/tka/init/finish", {"Signatures": sig})
        register(2)  # unsigned
        assert peers(0) == {members[1][0]}  # node 2 is unsigned
        assert peers(2) == {members[0][0], members[1][0]}
        # A signature for node 2 (token mode: no front) moves the answer at once.
        s2 = sign_direct(seed, members[2][2].raw).to_bytes()
        rpc(0, "/machine/tka/sign", {"Signature": base64.b64encode(s2).decode()})
        assert peers(0) == {members[1][0], members[2][0]}
        # A signed node inserted, then removed, through the store.
        k = os.urandom(32)
        with store.write("t") as txn:
            row = txn.insert_node(
                NodeRow(0, "t", k, b"", signature=sign_direct(seed, k).to_bytes())
            )
        assert row.node_id in peers(0)
        svc.delete_node("t", row.node_id)
        assert row.node_id not in peers(0)
        svc.delete_node("t", members[1][0])
        assert peers(0) == {members[2][0]}
    finally:
        store.close()
