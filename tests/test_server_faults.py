"""The control service under faults: kills, load, and fuzzed requests.

* Kill and restart ``tka serve`` while a client writes (SIGKILL and SIGTERM,
  several rounds): every write that was answered 200 is there afterwards.
* A bounded load test on loopback: concurrent clients syncing and submitting
  signatures against one tailnet for a fixed time; no 5xx, no lost write, the
  throughput printed.
* Fuzzed requests (hypothesis: methods, paths, tokens, bodies of every shape)
  never get a 5xx, and every error is a JSON body.

Each runs on SQLite and on PostgreSQL (when one is available).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _server_harness import PostgresProvider, ServerProcess, mint_admin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tka import ed25519
from tka.aum import AUM
from tka.authority import Authority, Signer
from tka.builder import UpdateBuilder
from tka.control.client import AdminClient, ControlClient, sync_node
from tka.control.errors import ControlRequestError
from tka.key import Key
from tka.nlkeys import NodePublic
from tka.sig import sign_direct
from tka.state import State
from tka.storage.memory import MemoryStore

# -- fixtures and a small world ----------------------------------------------------------------


def _store_url(kind: str, tmp: Path, pg: PostgresProvider) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp}/control.db"
    if pg.unavailable:
        pytest.skip(f"PostgreSQL: {pg.unavailable}")
    return pg.new_database()


@dataclass
class World:
    """A tailnet with lock enabled, seen from the test: members, devices, a signer."""

    server: ServerProcess
    admin: AdminClient
    admin_token: str
    seed: bytes
    members: list[tuple[int, str, NodePublic]]
    devices: list[tuple[int, NodePublic]]
    genesis: AUM
    mirror_store: MemoryStore = field(default_factory=MemoryStore)
    mirror: Authority | None = None

    def client(self, i: int = 0) -> ControlClient:
        _, token, key = self.members[i]
        return ControlClient(self.server.url, token, key, timeout=30)

    def new_aum(self) -> AUM:
        """An add-key AUM on top of the mirror's head (not applied to the mirror)."""
        assert self.mirror is not None
        b = UpdateBuilder(self.mirror, Signer((self.seed,)))
        b.add_key(Key.ed25519(ed25519.public_from_seed(ed25519.generate_seed())))
        return b.finalize(self.mirror_store)[0]


def make_world(server: ServerProcess, admin_token: str, members: int, devices: int) -> World:
    admin = AdminClient(server.url, admin_token)
    admin.create_tailnet("t1")
    seed = ed25519.generate_seed()
    regs = []
    for _ in range(members):
        key = NodePublic(os.urandom(32))
        out = admin.register_node("t1", key, may_init=True)
        regs.append((int(out["NodeID"]), str(out["Token"]), key))
    ids = os.urandom(16)
    state = State(
        disablement_values=(os.urandom(32),),
        keys=(Key.ed25519(ed25519.public_from_seed(seed)),),
        state_id1=int.from_bytes(ids[:8], "little"),
        state_id2=int.from_bytes(ids[8:], "little"),
    )
    _, genesis = Authority.create(MemoryStore(), state, Signer((seed,)))
    world = World(server, admin, admin_token, seed, regs, [], genesis)
    client = world.client(0)
    need = client.init_begin(genesis)
    client.init_finish(
        {i.node_id: sign_direct(seed, i.node_public.raw).to_bytes() for i in need if i.node_public}
    )
    world.mirror = Authority.bootstrap(world.mirror_store, genesis)
    for _ in range(devices):
        key = NodePublic(os.urandom(32))
        out = admin.register_node("t1", key)
        world.devices.append((int(out["NodeID"]), key))
    return world


def _log_hashes(world: World) -> set[str]:
    doc = json.loads(world.admin.log("t1", 10_000))
    return {m["Hash"] for m in doc["Messages"]}


# -- kill and restart --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_acknowledged_writes_survive_kills(
    kind: str, tmp_path: Path, pg: PostgresProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    store_url = _store_url(kind, tmp_path, pg)
    token = mint_admin(store_url)
    server = ServerProcess(store_url, str(tmp_path)).start()
    rnd = random.Random(7)
    try:
        world = make_world(server, token, members=1, devices=0)
        registered: dict[int, NodePublic] = {}
        signed: dict[int, bytes] = {}
        aums: list[str] = []
        kills = Counter[str]()
        rounds = ["SIGKILL", "SIGKILL", "SIGTERM", "SIGKILL", "SIGTERM", "SIGKILL"]
        for how in rounds:
            stop = threading.Event()
            client = world.client(0)

            def writer(stop: threading.Event = stop, client: ControlClient = client) -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    try:
                        key = NodePublic(os.urandom(32))
                        out = world.admin.register_node("t1", key)
                        registered[int(out["NodeID"])] = key
                        sig = sign_direct(world.seed, key.raw).to_bytes()
                        client.sign(sig)
                        signed[int(out["NodeID"])] = sig
                        if n % 2 == 0:
                            aum = world.new_aum()
                            assert world.mirror is not None
                            client.sync_send(aum.hash, [aum], interactive=True)
                            # Acknowledged: now it is the mirror's too.
                            world.mirror.inform(world.mirror_store, [aum])
                            aums.append(aum.hash_text)
                    except ControlRequestError as exc:
                        assert exc.status < 500 or exc.status == 0, exc
                        if exc.status == 0:
                            return  # the server is gone: stop writing
                        raise

            t = threading.Thread(target=writer)
            t.start()
            time.sleep(rnd.uniform(0.3, 0.9))
            assert server.proc is not None
            if how == "SIGKILL":
                server.kill()
            else:
                assert server.stop() == 0  # graceful: in-flight requests finish
            kills[how] += 1
            stop.set()
            t.join(60)
            assert not t.is_alive()
            server.start()
            # Catch the mirror up with AUMs committed but not acknowledged.
            world.mirror, _ = sync_node(world.client(0), world.mirror_store, world.mirror)
            # Everything acknowledged is there.
            nodes = {n.node_id: n for n in world.admin.nodes("t1")}
            for node_id, key in registered.items():
                assert node_id in nodes and nodes[node_id].node_key == key
            for node_id, sig in signed.items():
                assert nodes[node_id].key_signature == sig and nodes[node_id].admitted
            assert set(aums) <= _log_hashes(world)
            assert world.admin.status("t1")["Head"] == world.mirror.head.hash_text
        assert len(aums) > 0 and len(signed) > 0
        with capsys.disabled():
            print(
                f"\n[{kind}] kills: {dict(kills)}; acknowledged and found after restarts: "
                f"{len(registered)} registrations, {len(signed)} signatures, {len(aums)} AUMs"
            )
    finally:
        if server.proc is not None:
            server.stop()


# -- load --------------------------------------------------------------------------------------


class KeepAlive:
    """One persistent HTTP/1.1 connection sending JSON with a bearer token."""

    def __init__(self, port: int, token: str | None) -> None:
        self.port = port
        self.token = token
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            self.conn.request(method, path, body=body, headers=headers)
            resp = self.conn.getresponse()
            return resp.status, resp.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            raise

    def close(self) -> None:
        self.conn.close()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_bounded_load(
    kind: str, tmp_path: Path, pg: PostgresProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    duration = float(os.environ.get("TKA_LOAD_SECONDS", "6"))
    workers = 6
    store_url = _store_url(kind, tmp_path, pg)
    token = mint_admin(store_url)
    with ServerProcess(store_url, str(tmp_path)) as server:
        world = make_world(server, token, members=workers + 1, devices=60)
        head_text = [world.genesis.hash_text]
        stats: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        lock = threading.Lock()
        last_acked: dict[int, bytes] = {}
        acked_aums: list[str] = []
        errors: list[str] = []
        deadline = time.monotonic() + duration

        def worker(w: int) -> None:
            _, tok, key = world.members[w]
            conn = KeepAlive(server.port, tok)
            mine = world.devices[w::workers]
            rnd = random.Random(w)
            try:
                while time.monotonic() < deadline:
                    r = rnd.random()
                    if r < 0.45:
                        op, path = "offer", "/machine/tka/sync/offer"
                        body: dict[str, Any] = {
                            "Head": world.genesis.hash_text,
                            "Ancestors": [world.genesis.hash_text],
                        }
                    elif r < 0.55:
                        op, path = "send", "/machine/tka/sync/send"
                        body = {"Head": head_text[0], "MissingAUMs": []}
                    elif r < 0.85:
                        op, path = "sign", "/machine/tka/sign"
                        node_id, dev = rnd.choice(mine)
                        sig = sign_direct(world.seed, dev.raw, os.urandom(32)).to_bytes()
                        body = {"Signature": _b64(sig)}
                    else:
                        op, path = "map", "/machine/map"
                        body = {}
                    body.update({"Version": 131, "NodeKey": key.text()})
                    try:
                        status, data = conn.call("GET", path, json.dumps(body).encode())
                    except (http.client.HTTPException, OSError) as exc:
                        with lock:
                            errors.append(f"{op}: {type(exc).__name__}")
                        continue
                    with lock:
                        stats[op] += 1
                        statuses[status] += 1
                        if status != 200:
                            errors.append(f"{op}: {status} {data[:200]!r}")
                        elif op == "sign":
                            last_acked[node_id] = sig
            finally:
                conn.close()

        def changer() -> None:
            # The head moves during the run: re-evaluation and cache misses.
            client = world.client(workers)
            while time.monotonic() < deadline:
                aum = world.new_aum()
                try:
                    client.sync_send(aum.hash, [aum], interactive=True)
                except ControlRequestError as exc:
                    with lock:
                        errors.append(f"change: {exc}")
                    return
                assert world.mirror is not None
                world.mirror.inform(world.mirror_store, [aum])
                with lock:
                    acked_aums.append(aum.hash_text)
                    stats["change"] += 1
                    statuses[200] += 1
                head_text[0] = aum.hash_text
                time.sleep(0.4)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
        threads.append(threading.Thread(target=changer))
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(duration + 120)
        elapsed = time.monotonic() - start
        total = sum(stats.values())
        five_xx = sum(n for s, n in statuses.items() if s >= 500)

        # No lost write: every device holds the last signature acknowledged for
        # it (each device is written by one worker only, so "last" is defined),
        # and every acknowledged AUM is on the chain.
        nodes = {n.node_id: n for n in world.admin.nodes("t1")}
        lost = [i for i, sig in last_acked.items() if nodes[i].key_signature != sig]
        lost_aums = set(acked_aums) - _log_hashes(world)
        with capsys.disabled():
            print(
                f"\n[{kind}] load: {total} requests in {elapsed:.1f}s = "
                f"{total / elapsed:.0f} req/s "
                f"({dict(stats)}); statuses {dict(statuses)}; 5xx {five_xx}; "
                f"lost writes {len(lost) + len(lost_aums)}"
            )
        assert five_xx == 0
        assert not errors, errors[:5]
        assert not lost and not lost_aums
        assert stats["sign"] > 0 and stats["offer"] > 0 and acked_aums


# -- fuzzing -----------------------------------------------------------------------------------


@dataclass
class FuzzTarget:
    server: ServerProcess
    world: World
    values: list[Any]
    tokens: list[str | None]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, pg: PostgresProvider
) -> Iterator[FuzzTarget]:
    tmp = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    store_url = _store_url(request.param, tmp, pg)
    token = mint_admin(store_url)
    server = ServerProcess(store_url, str(tmp)).start()
    try:
        world = make_world(server, token, members=2, devices=2)
        _, m_token, m_key = world.members[0]
        dev_key = world.devices[0][1]
        child = world.new_aum()
        values: list[Any] = [
            m_key.text(),
            dev_key.text(),
            "nodekey:" + "0" * 64,
            "nodekey:zz",
            world.genesis.hash_text,
            child.hash_text,
            "A" * 52,
            _b64(world.genesis.to_bytes()),
            _b64(child.to_bytes()),
            _b64(sign_direct(world.seed, dev_key.raw).to_bytes()),
            _b64(ed25519.public_from_seed(world.seed)),
            [world.genesis.hash_text],
            [_b64(child.to_bytes())],
            {str(world.members[0][0]): _b64(sign_direct(world.seed, m_key.raw).to_bytes())},
            "",
            "t1",
            2**70,
            -1,
            "\x00",
            "\ud800",
        ]
        tokens = [None, m_token, world.members[1][1], token, "garbage", "tkanode_1_" + "A" * 43]
        yield FuzzTarget(server, world, values, tokens)
    finally:
        server.stop()


FIELDS = [
    "Version",
    "NodeKey",
    "GenesisAUM",
    "Signatures",
    "SupportDisablement",
    "Head",
    "Ancestors",
    "MissingAUMs",
    "Interactive",
    "DisablementSecret",
    "Signature",
    "KeyID",
    "OldNodeKey",
    "NodeKeySignature",
    "TKAHead",
    "Name",
    "RotationPubkey",
    "NLKey",
]
PATHS = [
    "/machine/tka/init/begin",
    "/machine/tka/init/finish",
    "/machine/tka/bootstrap",
    "/machine/tka/sync/offer",
    "/machine/tka/sync/send",
    "/machine/tka/disable",
    "/machine/tka/sign",
    "/machine/tka/affected-sigs",
    "/machine/register",
    "/machine/map",
    "/machine/tka/",
    "/healthz",
    "/",
    "/admin/tailnets",
    "/admin/tailnets/t1",
    "/admin/tailnets/t1/nodes",
    "/admin/tailnets/t1/nodes/999999",
    "/admin/tailnets/t1/nodes/99999999999999999999999",
    "/admin/tailnets/%00/nodes",
    "/admin/tailnets/t1/locked-out",
    "/admin/tailnets/t1/log?limit=3",
    "/admin/tailnets/t1/log?limit=-1",
    "/admin/tailnets/t1/log?limit=99999999999",
    "/admin/tailnets/nope/log",
    "/admin/tailnets/t1/affected-sigs?key=tlpub:00",
    "/admin/tailnets/t1/affected-sigs",
]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def fuzz_request(
    draw: st.DrawFn, values: list[Any], tokens: list[str | None]
) -> tuple[str, str, bytes, str | None]:
    method = draw(st.sampled_from(["GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH"]))
    path = draw(
        st.one_of(
            st.sampled_from(PATHS),
            st.text(
                alphabet=st.characters(
                    min_codepoint=33, max_codepoint=126, exclude_characters="?#%"
                ),
                max_size=30,
            ).map(lambda s: "/" + s),
        )
    )
    kind = draw(st.sampled_from(["object", "object", "object", "json", "bytes", "empty"]))
    if kind == "object":
        obj = draw(
            st.dictionaries(
                st.sampled_from(FIELDS) | st.text(max_size=6),
                st.sampled_from(values) | json_value,
                max_size=6,
            )
        )
        body = json.dumps(obj).encode()
    elif kind == "json":
        body = json.dumps(draw(json_value)).encode()
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
    else:
        body = b""
    return method, path, body, draw(st.sampled_from(tokens))


def test_fuzzed_requests_never_get_a_5xx(fuzz_target: FuzzTarget) -> None:
    conn = KeepAlive(fuzz_target.server.port, None)
    seen: Counter[int] = Counter()

    @settings(
        max_examples=int(os.environ.get("TKA_FUZZ_EXAMPLES", "300")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(req=fuzz_request(fuzz_target.values, fuzz_target.tokens))
    def check(req: tuple[str, str, bytes, str | None]) -> None:
        method, path, body, token = req
        conn.token = token
        status, data = conn.call(method, path, body)
        seen[status] += 1
        assert status < 500, (method, path, body[:200], status, data[:300])
        if status >= 400:
            doc = json.loads(data)
            assert isinstance(doc.get("error"), str) and doc.get("code"), data
        elif path.startswith("/machine/") or path == "/healthz":
            json.loads(data)

    try:
        check()
    finally:
        conn.close()
    assert sum(seen.values()) > 0
    # Still healthy, and the log holds no 5xx either.
    assert fuzz_target.server.get("/healthz")[0] == 200
    assert all(r.get("status", 200) < 500 for r in fuzz_target.server.log_records())


def test_oversized_and_malformed_bodies(fuzz_target: FuzzTarget) -> None:
    port = fuzz_target.server.port
    _, tok, key = fuzz_target.world.members[0]
    # 1 MiB for sign, 10 MiB for sync: one byte over is 413, by declared length...
    for path, limit in (("/machine/tka/sign", 1 << 20), ("/machine/tka/sync/send", 10 << 20)):
        conn = KeepAlive(port, tok)
        status, data = conn.call("GET", path, b" " * (limit + 1))
        assert status == 413 and json.loads(data)["code"] == "payload_too_large"
        conn.close()
    # ... and when streamed without a length (chunked).
    raw = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    raw.request(
        "POST",
        "/machine/tka/sign",
        body=iter([b" " * (256 << 10)] * 5),
        headers={"Authorization": f"Bearer {tok}"},
        encode_chunked=True,
    )
    resp = raw.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["code"] == "payload_too_large"
    raw.close()
    # Just under the limit is read, and then judged on its content.
    conn = KeepAlive(port, tok)
    status, data = conn.call("GET", "/machine/tka/sign", b" " * ((1 << 20) - 10))
    assert status == 400 and "empty" in json.loads(data)["error"]
    for body, code in (
        (b"{", 400),
        (b"[]", 400),
        (json.dumps({"NodeKey": key.text(), "Signature": 5}).encode(), 400),
        (json.dumps({"NodeKey": key.text()}).encode(), 400),
    ):
        status, data = conn.call("GET", "/machine/tka/sign", body)
        assert status == code, data
    # Wrong method, unknown path: JSON too.
    status, data = conn.call("PUT", "/machine/tka/sign", b"{}")
    assert status == 405 and json.loads(data)["code"] == "method_not_allowed"
    status, data = conn.call("GET", "/nowhere", None)
    assert status == 404 and json.loads(data)["code"] == "not_found"
    conn.close()


def test_graceful_shutdown_finishes_requests_in_flight(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/control.db"
    token = mint_admin(store_url)
    server = ServerProcess(store_url, str(tmp_path)).start()
    world = make_world(server, token, members=1, devices=0)
    _, tok, key = world.members[0]
    # A request whose body is still arriving when SIGTERM comes is in flight:
    # the server must wait for it, answer it, and only then exit.
    body = json.dumps(
        {
            "NodeKey": key.text(),
            "Head": world.genesis.hash_text,
            "DisablementSecret": _b64(os.urandom(32)),
        }
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        f"GET /machine/tka/disable HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    sock.sendall(head + body[:10])
    time.sleep(0.3)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    sock.sendall(body[10:])
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    # A wrong secret: refused after the full Argon2 check, as it would be anyway.
    assert answer.startswith(b"HTTP/1.1 403"), answer[:200]
    assert server.proc.wait(30) == 0
    server.proc = None
    events = [(r.get("event"), r.get("status")) for r in server.log_records() if r.get("event")]
    assert events[-2:] == [("request", 403), ("stopped", None)]
