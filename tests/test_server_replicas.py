"""Several ``tka serve`` processes on one database: replicas, workers, shared limits.

* Three replicas on one PostgreSQL under concurrent signed writes (``sign``
  for many nodes, AUMs through ``sync/send``), one of them SIGKILLed mid-run
  and restarted: every acknowledged write is there afterwards, the replicas
  agree on the head, and no answer was a 5xx.
* The disable-attempt limit is kept in the database: wrong secrets sent
  round-robin to three replicas get Argon2 only ``DISABLE_ATTEMPTS`` times
  in all (429 for the rest); likewise across the workers of one
  ``tka serve --workers 3`` on SQLite, whose supervisor restarts a killed
  worker and stops cleanly on SIGTERM.
* ``sync/send``: over the AUM cap is a 400 before anything is verified, and
  verification holds no transaction (so no pool connection).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _server_harness import PostgresProvider, ServerProcess, mint_admin
from test_server_faults import World, _log_hashes, make_world

import tka.authority
from tka import ed25519
from tka.authority import Authority, Signer
from tka.builder import UpdateBuilder
from tka.chain import compute_state_at
from tka.control import wire
from tka.control.client import AdminClient, ControlClient, sync_node
from tka.control.errors import BadRequest, ControlRequestError
from tka.control.service import (
    DISABLE_ATTEMPTS,
    MAX_SEND_AUMS,
    ControlService,
    RequestContext,
)
from tka.control.store import SCHEMA_VERSION, ControlStore, open_store
from tka.key import Key
from tka.limits import MAX_SYNC_ITER
from tka.nlkeys import NodePublic
from tka.sig import sign_direct
from tka.state import State
from tka.storage.memory import MemoryStore


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _pg_url(pg: PostgresProvider) -> str:
    if pg.unavailable:
        pytest.skip(f"PostgreSQL: {pg.unavailable}")
    return pg.new_database()


def _replicas(store_url: str, tmp: Path, n: int) -> list[ServerProcess]:
    out = []
    for i in range(n):
        d = tmp / f"replica{i}"
        d.mkdir()
        out.append(ServerProcess(store_url, str(d)).start())
    return out


def _disable_statuses(urls: list[str], world: World, n: int) -> Counter[int]:
    """*n* wrong disablement secrets, each on a new connection, round-robin over *urls*."""
    _, tok, key = world.members[0]
    body = json.dumps(
        {
            "NodeKey": key.text(),
            "Head": world.genesis.hash_text,
            "DisablementSecret": _b64(os.urandom(32)),
        }
    ).encode()
    seen: Counter[int] = Counter()
    for i in range(n):
        host, port = urls[i % len(urls)].removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request(
                "GET", "/machine/tka/disable", body=body, headers={"Authorization": f"Bearer {tok}"}
            )
            resp = conn.getresponse()
            resp.read()
            seen[resp.status] += 1
        finally:
            conn.close()
    return seen


# -- replicas ------------------------------------------------------------------------------------


def test_replicas_keep_acknowledged_writes_through_a_sigkill(
    tmp_path: Path, pg: PostgresProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    store_url = _pg_url(pg)
    admin_token = mint_admin(store_url)
    replicas = _replicas(store_url, tmp_path, 3)
    try:
        world = make_world(replicas[0], admin_token, members=5, devices=60)
        admins = [AdminClient(r.url, admin_token) for r in replicas]
        lock = threading.Lock()
        signed: dict[int, bytes] = {}  # device -> last acknowledged signature
        acked_aums: list[str] = []
        statuses: Counter[tuple[int, int]] = Counter()  # (replica, status)
        unexpected: list[str] = []
        down = threading.Event()  # replica 1 is being killed or restarted
        stop = threading.Event()

        def note(replica: int, exc: ControlRequestError | None) -> None:
            status = 200 if exc is None else exc.status
            with lock:
                statuses[(replica, status)] += 1
                # 0: the replica is gone (the killed one); 409: the chain moved.
                if status not in (0, 200, 409) and not (status >= 500 and replica == 1):
                    unexpected.append(f"replica {replica}: {exc}")

        def signer(w: int) -> None:
            _, tok, key = world.members[w]
            clients = [ControlClient(r.url, tok, key, timeout=30) for r in replicas]
            mine = world.devices[w::4]
            n = 0
            while not stop.is_set():
                n += 1
                i = n % len(replicas)
                node_id, dev = mine[n % len(mine)]
                sig = sign_direct(world.seed, dev.raw, os.urandom(32)).to_bytes()
                try:
                    clients[i].sign(sig)
                except ControlRequestError as exc:
                    note(i, exc)
                    continue
                note(i, None)
                with lock:
                    signed[node_id] = sig

        def changer() -> None:
            # AUMs, sent to each replica in turn (interactive: a lost fork is a 409).
            _, tok, key = world.members[4]
            clients = [ControlClient(r.url, tok, key, timeout=30) for r in replicas]
            n = 0
            while not stop.is_set():
                n += 1
                i = n % len(replicas)
                aum = world.new_aum()
                try:
                    clients[i].sync_send(aum.hash, [aum], interactive=True)
                except ControlRequestError as exc:
                    note(i, exc)
                    # Committed but not acknowledged, or refused: catch up
                    # from a replica that is up, then go on.
                    live = 0 if i != 0 else 2
                    world.mirror, _ = sync_node(clients[live], world.mirror_store, world.mirror)
                    continue
                note(i, None)
                assert world.mirror is not None
                world.mirror.inform(world.mirror_store, [aum])
                with lock:
                    acked_aums.append(aum.hash_text)
                time.sleep(0.05)

        threads = [threading.Thread(target=signer, args=(w,)) for w in range(4)]
        threads.append(threading.Thread(target=changer))
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            down.set()
            replicas[1].kill()  # SIGKILL mid-run
            time.sleep(0.7)
            replicas[1].start()
            down.clear()
            with lock:
                before_restart = statuses[(1, 200)]
            time.sleep(1.5)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not any(t.is_alive() for t in threads)

        five_xx = {k: v for k, v in statuses.items() if k[1] >= 500}
        acked = sum(v for k, v in statuses.items() if k[1] == 200)
        with capsys.disabled():
            print(
                f"\n[replicas] {acked} acknowledged writes ({len(signed)} devices signed, "
                f"{len(acked_aums)} AUMs); statuses by (replica, status): {dict(statuses)}"
            )
        assert not unexpected, unexpected[:5]
        assert not {k: v for k, v in five_xx.items() if k[0] != 1}, five_xx  # survivors
        assert signed and acked_aums
        assert all(statuses[(i, 200)] > 0 for i in range(3))
        assert statuses[(1, 200)] > before_restart  # the restarted replica serves again

        # Every acknowledged write is there, seen from every replica.
        heads = set()
        for admin in admins:
            nodes = {n.node_id: n for n in admin.nodes("t1")}
            lost = [i for i, sig in signed.items() if nodes[i].key_signature != sig]
            assert not lost, lost[:5]
            heads.add(admin.status("t1")["Head"])
        assert set(acked_aums) <= _log_hashes(world)
        assert len(heads) == 1, heads
        world.mirror, _ = sync_node(world.client(0), world.mirror_store, world.mirror)
        assert world.mirror is not None and heads == {world.mirror.head.hash_text}
    finally:
        for r in replicas:
            if r.proc is not None:
                r.stop()


def test_the_disable_limit_is_shared_by_replicas(tmp_path: Path, pg: PostgresProvider) -> None:
    store_url = _pg_url(pg)
    admin_token = mint_admin(store_url)
    replicas = _replicas(store_url, tmp_path, 3)
    try:
        world = make_world(replicas[0], admin_token, members=1, devices=0)
        seen = _disable_statuses([r.url for r in replicas], world, 3 * DISABLE_ATTEMPTS)
        # 403: Argon2 ran and the secret did not match; 429: refused before Argon2.
        # (With a limit per process, each replica ran Argon2 DISABLE_ATTEMPTS times.)
        assert seen == {403: DISABLE_ATTEMPTS, 429: 2 * DISABLE_ATTEMPTS}, seen
    finally:
        for r in replicas:
            r.stop()


# -- workers -------------------------------------------------------------------------------------


def test_workers_share_the_socket_the_limit_and_stop_cleanly(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/control.db"
    admin_token = mint_admin(store_url)
    server = ServerProcess(store_url, str(tmp_path), extra_args=("--workers", "3")).start()
    try:
        world = make_world(server, admin_token, members=1, devices=0)
        started = [r for r in server.log_records() if r.get("event") == "worker_started"]
        assert len({r["pid"] for r in started}) == 3
        # Fresh connections land on any worker: the limit holds across them.
        seen = _disable_statuses([server.url], world, 3 * DISABLE_ATTEMPTS)
        assert seen == {403: DISABLE_ATTEMPTS, 429: 2 * DISABLE_ATTEMPTS}, seen
        # A worker killed outright is started again; the service keeps answering.
        os.kill(started[0]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            records = server.log_records()
            if [r for r in records if r.get("event") == "worker_started"][3:]:
                break
            time.sleep(0.1)
        exited = [r for r in server.log_records() if r.get("event") == "worker_exited"]
        assert exited and exited[0]["pid"] == started[0]["pid"] and exited[0]["status"] == -9
        for _ in range(12):
            assert server.get("/healthz")[0] == 200
        assert world.admin.status("t1")["Status"] == "enabled"
    finally:
        assert server.stop() == 0  # SIGTERM: every worker stops gracefully
    events = [r.get("event") for r in server.log_records()]
    assert events.count("stopped") == 3 and "stopping" in events  # the 3 live workers


def test_workers_option_is_checked(tmp_path: Path) -> None:
    from tka_server.run import serve  # type: ignore[import-not-found,unused-ignore]

    from tka.errors import UsageError

    with pytest.raises(UsageError, match="--workers"):
        serve(f"sqlite:///{tmp_path}/c.db", "127.0.0.1:0", workers=0)


# -- the limit's table ---------------------------------------------------------------------------


def test_attempt_counter_is_atomic_windowed_and_pruned(control_store: ControlStore) -> None:
    def hit(key: str, now: float) -> int:
        with control_store.write() as txn:
            return txn.count_attempt(key, now, 60.0)

    assert [hit("a", 1000.0 + i) for i in range(7)] == [1, 2, 3, 4, 5, 6, 7]
    assert hit("b", 1000.0) == 1
    assert hit("a", 1059.9) == 8  # the window opened at the first attempt
    assert hit("a", 1060.0) == 1  # ... and is over 60 s later
    # A window that opens prunes the expired rows: "b" (expired at 1060) is gone.
    with control_store.read() as txn:
        rows = txn.execute("SELECT key FROM rate_limits ORDER BY key")  # type: ignore[attr-defined]
    assert [r[0] for r in rows] == ["a"]
    # Concurrent attempts all count (one upsert each, no lost update).
    counts: list[int] = []
    lock = threading.Lock()

    def burst() -> None:
        for _ in range(10):
            n = hit("c", 2000.0)
            with lock:
                counts.append(n)

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(counts) == list(range(1, 41))


def test_a_version_3_store_is_upgraded(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    open_store(url).close()
    import sqlite3

    conn = sqlite3.connect(tmp_path / "c.db")
    conn.execute("DROP TABLE rate_limits")
    conn.execute("UPDATE tka_control_meta SET value = '3' WHERE name = 'schema_version'")
    conn.commit()
    conn.close()
    store = open_store(url)
    try:
        with store.write() as txn:
            assert txn.count_attempt("k", 1.0, 60.0) == 1
            version = txn.execute(  # type: ignore[attr-defined]
                "SELECT value FROM tka_control_meta WHERE name = 'schema_version'"
            )
        assert int(version[0][0]) == SCHEMA_VERSION == 4
    finally:
        store.close()


# -- sync/send -----------------------------------------------------------------------------------


class _CountingStore:
    """A store that knows how many transactions are open (and so connections checked out)."""

    def __init__(self, inner: ControlStore) -> None:
        self.inner = inner
        self.url_scheme = inner.url_scheme
        self.open = 0

    @contextmanager
    def _counted(self, cm: Any) -> Iterator[Any]:
        with cm as txn:
            self.open += 1
            try:
                yield txn
            finally:
                self.open -= 1

    def read(self) -> Any:
        return self._counted(self.inner.read())

    def write(self, tailnet: str | None = None) -> Any:
        return self._counted(self.inner.write(tailnet))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _enabled_service(
    store: Any,
) -> tuple[ControlService, tuple[str, NodePublic], bytes, Authority, MemoryStore]:
    svc = ControlService(store)
    svc.create_tailnet("t1")
    key = NodePublic(os.urandom(32))
    out = svc.register_node("t1", wire.AdminRegisterRequest(key, may_init=True))
    who = (str(out["Token"]), key)
    seed = ed25519.generate_seed()
    ids = os.urandom(16)
    state = State(
        disablement_values=(os.urandom(32),),
        keys=(Key.ed25519(ed25519.public_from_seed(seed)),),
        state_id1=int.from_bytes(ids[:8], "little"),
        state_id2=int.from_bytes(ids[8:], "little"),
    )
    genesis = Authority.create(MemoryStore(), state, Signer((seed,)))[1]
    need = _rpc(svc, "/machine/tka/init/begin", who, {"GenesisAUM": _b64(genesis.to_bytes())})
    sigs = {
        str(i["NodeID"]): _b64(
            sign_direct(seed, NodePublic.from_text(i["NodePublic"]).raw).to_bytes()
        )
        for i in need["NeedSignatures"]
    }
    _rpc(svc, "/machine/tka/init/finish", who, {"Signatures": sigs})
    mirror_store = MemoryStore()
    return svc, who, seed, Authority.bootstrap(mirror_store, genesis), mirror_store


def _rpc(svc: ControlService, path: str, who: tuple[str, NodePublic], body: dict[str, Any]) -> Any:
    token, key = who
    return svc.handle(path, token, {"NodeKey": key.text(), **body}, RequestContext())


def test_sync_send_over_the_cap_is_refused_before_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MAX_SEND_AUMS == MAX_SYNC_ITER == wire.MAX_LIST_ITEMS == 2000  # maxSyncIter
    store = open_store(f"sqlite:///{tmp_path}/c.db")
    try:
        svc, who, seed, mirror, mstore = _enabled_service(store)
        b = UpdateBuilder(mirror, Signer((seed,)))
        b.add_key(Key.ed25519(ed25519.public_from_seed(ed25519.generate_seed())))
        aum = b.finalize(mstore)[0]
        decoded: list[int] = []
        real_from_bytes = tka.control.service.sync._decode_aum  # type: ignore[attr-defined]

        def counting(data: bytes, where: str) -> Any:
            decoded.append(1)
            return real_from_bytes(data, where)

        monkeypatch.setattr(tka.control.service.sync, "_decode_aum", counting)

        def inform(*args: object, **kwargs: object) -> None:
            raise AssertionError("verified an AUM of a request over the cap")

        monkeypatch.setattr(tka.authority.Authority, "inform", inform)
        body = {"Head": aum.hash_text, "MissingAUMs": [_b64(aum.to_bytes())] * (MAX_SEND_AUMS + 1)}
        # Over HTTP or handle(): the wire layer refuses the list before base64.
        with pytest.raises(BadRequest, match=f"more than {MAX_SEND_AUMS} items"):
            _rpc(svc, "/machine/tka/sync/send", who, body)
        # Called directly with a request built in code: the handler refuses it.
        req = wire.SyncSendRequest(
            131, who[1], aum.hash, (aum.to_bytes(),) * (MAX_SEND_AUMS + 1), False
        )
        with pytest.raises(BadRequest, match="maxSyncIter"):
            svc.sync_send(who[0], req, RequestContext())
        assert not decoded
        monkeypatch.undo()
        # At the cap it is taken (duplicates count once).
        body["MissingAUMs"] = body["MissingAUMs"][:MAX_SEND_AUMS]
        assert _rpc(svc, "/machine/tka/sync/send", who, body)["Head"] == aum.hash_text
    finally:
        store.close()


def test_sync_send_verifies_with_no_transaction_open(
    control_store: ControlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _CountingStore(control_store)
    svc, who, seed, mirror, mstore = _enabled_service(store)
    open_at_verification: list[int] = []
    real = tka.authority._first_invalid  # type: ignore[attr-defined]

    def watched(checks: Any) -> Any:
        open_at_verification.append(store.open)
        return real(checks)

    monkeypatch.setattr(tka.authority, "_first_invalid", watched)
    fallbacks: list[int] = []
    snapshot_cls = tka.control.service.sync._Snapshot  # type: ignore[attr-defined]
    real_attach = snapshot_cls.attach

    def attach(self: Any, base: Any) -> None:
        fallbacks.append(1)
        real_attach(self, base)

    monkeypatch.setattr(snapshot_cls, "attach", attach)

    def add_key_aums(n: int) -> list[Any]:
        b = UpdateBuilder(mirror, Signer((seed,)))
        for _ in range(n):
            b.add_key(Key.ed25519(ed25519.public_from_seed(ed25519.generate_seed())))
        return list(b.finalize(mstore))

    # Extending the head: three AUMs in one request, interactive.
    three = add_key_aums(3)
    body = {"Head": three[-1].hash_text, "MissingAUMs": [_b64(a.to_bytes()) for a in three]}
    out = _rpc(svc, "/machine/tka/sync/send", who, {**body, "Interactive": True})
    assert out["Head"] == three[-1].hash_text
    mirror.inform(mstore, three)
    # A fork off an older AUM (non-interactive): the fork rules pick the head.
    fork_base = three[0]
    at_base = Authority(fork_base, mirror.oldest_ancestor, compute_state_at(mstore, fork_base.hash))
    b = UpdateBuilder(at_base, Signer((seed,)))
    b.add_key(Key.ed25519(ed25519.public_from_seed(ed25519.generate_seed())))
    fork = b.finalize(mstore)[0]
    assert fork.parent == fork_base.hash
    body = {"Head": fork.hash_text, "MissingAUMs": [_b64(fork.to_bytes())]}
    _rpc(svc, "/machine/tka/sync/send", who, body)
    with store.read() as txn:
        assert txn.aum_storage("t1").get(fork.hash) is not None  # kept, as a branch or the head
    # The two sends and the test's own mirror.inform: none with a transaction open.
    assert open_at_verification == [0, 0, 0], open_at_verification
    assert not fallbacks
