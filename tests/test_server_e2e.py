"""End to end: a real ``tka serve`` on loopback and three CLI nodes in subprocesses.

The flow of a tailnet's life, once on SQLite and once on PostgreSQL: init with
two signers and two disablement secrets; register and sign five nodes;
rotate a node key and stay admitted; a fork made by two nodes while the third
is offline, after which every node and the service agree on the head the
fork rules choose; removing a signer locks out exactly the nodes it signed;
re-signing them; revoking a key with a cosign; disabling with a secret (the
offline node learns it); and the service's lock log passes ``tka audit``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _server_harness import PostgresProvider, ServerProcess, tka_command

from tka.aum import hash_from_text
from tka.chain import compute_state_at, pick_next_aum
from tka.storage.fs import FilesystemStore


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, pg: PostgresProvider) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/control.db"
    if pg.unavailable:
        pytest.skip(f"PostgreSQL: {pg.unavailable}")
    return pg.new_database()


class CLI:
    """Runs ``tka`` subcommands with the test's environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*tka_command(), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        if ok:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def admin(self, *args: str) -> Any:
        return json.loads(self.run("control", *args, "--json").stdout)


class Node:
    def __init__(self, cli: CLI, root: Path, name: str) -> None:
        self.cli = cli
        self.dir = str(root / name)
        self.name = name

    def lock(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cli.run("lock", "--state-dir", self.dir, *args, ok=ok)

    def head(self) -> str:
        """Syncs (status does) and returns the local head."""
        out = self.lock("status").stdout
        m = re.search(r"^Head: (\S+)$", out, re.M)
        assert m, out
        return m.group(1)

    def enabled(self) -> bool:
        return "Tailnet lock is ENABLED." in self.lock("status").stdout


def _nodekey() -> str:
    return "nodekey:" + os.urandom(32).hex()


def test_tailnet_lifecycle_against_tka_serve(store_url: str, tmp_path: Path) -> None:
    admin_token = tmp_path / "admin.token"
    env = {**os.environ, "TKA_ADMIN_TOKEN_FILE": str(admin_token)}
    cli = CLI(env)
    cli.run("control", "admin-token", "--store", store_url, "--out", str(admin_token))
    with ServerProcess(store_url, str(tmp_path)) as server:
        env["TKA_CONTROL_URL"] = server.url
        _lifecycle(cli, server, tmp_path, admin_token.read_text().strip())


def _lifecycle(cli: CLI, server: ServerProcess, tmp: Path, admin_token: str) -> None:
    a, b, c = (Node(cli, tmp, n) for n in ("a", "b", "c"))
    tl = {n.name: n.lock("key").stdout.strip() for n in (a, b, c)}
    nk = {n.name: n.lock("node-key").stdout.strip() for n in (a, b, c)}
    c_rot = tmp / "c-rotation.key"
    c_rot_pub = cli.run("keygen", str(c_rot)).stdout.strip()

    # -- registration: admin creates the tailnet and registers the three nodes.
    cli.run("control", "create-tailnet", "t1")
    for n in (a, b, c):
        extra = ["--rotation-key", c_rot_pub] if n is c else ["--nl-key", tl[n.name]]
        if n is a:
            extra.append("--may-init")  # only a may initialize lock
        cred = tmp / f"{n.name}.cred"
        cli.run("control", "register", "t1", nk[n.name], *extra, "--out", str(cred))
        assert "Token" in json.loads(cred.read_text())
        n.lock("--control", server.url, "login", str(cred))

    # -- init with two signers and two disablement secrets.
    out = a.lock("init", "--gen-disablements", "2", "--confirm", tl["a"], tl["b"]).stdout
    secrets = re.findall(r"disablement-secret:[0-9A-F]{64}", out)
    assert len(secrets) == 2
    status = cli.admin("status", "t1")
    assert status["Status"] == "enabled" and status["LockedOut"] == 0
    assert {k["Key"] for k in status["TrustedKeys"]} == {tl["a"], tl["b"]}
    genesis = status["Head"]
    assert a.head() == b.head() == c.head() == genesis

    # -- register five nodes: locked out until signed; a signs three, b two.
    devices = {f"d{i}": _nodekey() for i in range(1, 6)}
    d1_rot_pub = cli.run("keygen", str(tmp / "d1-rotation.key")).stdout.strip()
    for name, key in devices.items():
        cli.run("control", "register", "t1", key, "--name", name, "--out", str(tmp / name))
    assert {n["Name"] for n in cli.admin("locked-out", "t1")} == set(devices)
    a.lock("sign", devices["d1"], d1_rot_pub)
    for name in ("d2", "d3"):
        a.lock("sign", devices[name])
    for name in ("d4", "d5"):
        b.lock("sign", devices[name])
    nodes = cli.admin("nodes", "t1")
    assert len(nodes) == 8 and all(n["Admitted"] for n in nodes)
    by_name = {n["Name"]: n for n in nodes}
    assert by_name["d4"]["SigningKey"] == tl["b"] and by_name["d1"]["SigningKey"] == tl["a"]

    # -- rotate c's node key with its rotation key: still admitted.
    c.lock("rotate-node-key", "--rotation-key", str(c_rot))
    new_c_key = c.lock("node-key").stdout.strip()
    assert new_c_key != nk["c"]
    c_row = next(n for n in cli.admin("nodes", "t1") if n["NodeKey"] == new_c_key)
    assert c_row["Admitted"] and "rotation" in c_row["Reason"], c_row
    assert not any(n["NodeKey"] == nk["c"] for n in cli.admin("nodes", "t1"))

    # -- a fork: c is offline; a and b each add a key from the same head.
    k1 = cli.run("keygen", str(tmp / "k1.key")).stdout.strip()
    k2 = cli.run("keygen", str(tmp / "k2.key")).stdout.strip()
    a.lock("add", k1)
    b.lock("add", k2)  # b still sits at the genesis: its change forks
    heads = {a.head(), b.head(), c.head(), cli.admin("status", "t1")["Head"]}
    assert len(heads) == 1, heads
    (head,) = heads
    # The head is the one Tailscale's fork rules choose among the two branches.
    b_store = FilesystemStore(os.path.join(b.dir, "tka"))
    g = hash_from_text(genesis)
    branches = b_store.children(g)
    assert len(branches) == 2
    winner = pick_next_aum(compute_state_at(b_store, g), branches)
    assert winner.hash_text == head
    won_key = k1 if winner.key is not None and winner.key.public.hex() in k1 else k2
    trusted = {k["Key"] for k in cli.admin("status", "t1")["TrustedKeys"]}
    assert trusted == {tl["a"], tl["b"], won_key}

    # -- affected-sigs, then removing b locks out exactly what b signed.
    affected = cli.run("control", "affected-sigs", "t1", tl["b"]).stdout.split()
    assert len(affected) == 2
    a.lock("remove", "--no-re-sign", tl["b"])
    locked = cli.admin("locked-out", "t1")
    assert {n["Name"] for n in locked} == {"d4", "d5"}
    assert all(tl["b"] in n["Reason"] for n in locked)
    events = [r for r in server.log_records() if r.get("event") == "head_changed"]
    assert sorted(events[-1]["newly_locked_out"]) == sorted(
        by_name[d]["NodeID"] for d in ("d4", "d5")
    )

    # -- re-sign them with a's key.
    for name in ("d4", "d5"):
        a.lock("sign", devices[name])
    assert cli.admin("locked-out", "t1") == []

    # -- revoke the fork's winning key with a cosign (a starts, b co-signs, a finishes).
    rec = str(tmp / "recovery.tka")
    a.lock("revoke-keys", won_key, "--out", rec)
    b.lock("revoke-keys", "--cosign", rec)
    a.lock("revoke-keys", "--finish", rec)
    heads = {a.head(), b.head(), c.head(), cli.admin("status", "t1")["Head"]}
    assert len(heads) == 1, heads
    trusted = {k["Key"] for k in cli.admin("status", "t1")["TrustedKeys"]}
    assert trusted == {tl["a"]}
    assert cli.admin("locked-out", "t1") == []

    # -- disable with a secret while c is offline; b and c learn it from control.
    a.lock("disable", secrets[1])
    assert cli.admin("status", "t1")["Status"] == "disabled"
    assert not b.enabled() and not c.enabled()
    assert "disabled on this node (secret)" in c.lock("status").stdout
    assert all(n["Admitted"] for n in cli.admin("nodes", "t1"))

    # -- the service's lock log passes tka audit.
    log = tmp / "log.json"
    log.write_text(cli.run("control", "log", "t1", "--limit", "100").stdout)
    report = json.loads(cli.run("audit", str(log), "--json").stdout)
    assert report["verdict"] == "valid", report
    assert report["genesis"] == genesis

    # -- nothing secret reached the service's log.
    text = Path(server.log_path).read_text()
    for secret in [*secrets, admin_token]:
        assert secret.split(":")[-1] not in text and secret.split(":")[-1].lower() not in text
    for n in (a, b, c):
        token = json.loads((tmp / f"{n.name}.cred").read_text())["Token"]
        assert token not in text and token.split("_", 2)[-1] not in text
    assert all(r.get("status", 200) < 500 for r in server.log_records())


def test_new_user_may_init_admin_tokens_and_token_remint(tmp_path: Path) -> None:
    """As a new user would: who may initialize, admin tokens, a node's new token."""
    store_url = f"sqlite:///{tmp_path}/control.db"
    admin_token = tmp_path / "admin.token"
    env = {**os.environ, "TKA_ADMIN_TOKEN_FILE": str(admin_token)}
    cli = CLI(env)
    cli.run(
        "control", "admin-token", "--store", store_url, "--label", "ops", "--out", str(admin_token)
    )
    spare = cli.run("control", "admin-token", "--store", store_url, "--label", "ci").stdout.strip()
    with ServerProcess(store_url, str(tmp_path)) as server:
        env["TKA_CONTROL_URL"] = server.url
        a, b = Node(cli, tmp_path, "a"), Node(cli, tmp_path, "b")
        tl = {n.name: n.lock("key").stdout.strip() for n in (a, b)}
        nk = {n.name: n.lock("node-key").stdout.strip() for n in (a, b)}
        cli.run("control", "create-tailnet", "example")
        # a is registered without --may-init, b with it.
        out = cli.run("control", "register", "example", nk["a"], "--out", str(tmp_path / "a.json"))
        assert "Registered node" in out.stdout
        a_cred = json.loads((tmp_path / "a.json").read_text())
        assert a_cred["MayInit"] is False
        b_out = str(tmp_path / "b.json")
        cli.run("control", "register", "example", nk["b"], "--may-init", "--out", b_out)
        assert json.loads((tmp_path / "b.json").read_text())["MayInit"] is True
        for n in (a, b):
            n.lock("--control", server.url, "login", str(tmp_path / f"{n.name}.json"))

        # a may not initialize: refused with 403, and nothing changed.
        refused = a.lock("init", "--gen-disablements", "1", "--confirm", tl["a"], ok=False)
        assert refused.returncode != 0
        assert "may not initialize" in refused.stderr and "403" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        assert cli.admin("status", "example")["Status"] == "off"
        # The admin grants it; now a's init goes through.
        out = cli.run("control", "allow-init", "example", str(a_cred["NodeID"]))
        assert "may initialize" in out.stdout
        a.lock("init", "--gen-disablements", "1", "--confirm", tl["a"], tl["b"])
        assert cli.admin("status", "example")["Status"] == "enabled"

        # Admin tokens: listed with label and creation time, never the secret.
        listing = cli.run("control", "admin-tokens").stdout
        assert "ops" in listing and "ci" in listing
        tokens = cli.admin("admin-tokens")
        assert [t["Label"] for t in tokens] == ["ops", "ci"]
        assert all(set(t) == {"ID", "Label", "Created"} for t in tokens)
        for secret in (admin_token.read_text().strip(), spare):
            assert secret.split("_", 2)[-1] not in listing + json.dumps(tokens)
        # Revoke the spare one: it stops working at once.
        spare_env = {**env, "TKA_ADMIN_TOKEN": spare}
        spare_env.pop("TKA_ADMIN_TOKEN_FILE")
        assert CLI(spare_env).run("control", "tailnets").returncode == 0
        spare_id = next(t["ID"] for t in tokens if t["Label"] == "ci")
        assert "Revoked" in cli.run("control", "revoke-admin-token", str(spare_id)).stdout
        denied = CLI(spare_env).run("control", "tailnets", ok=False)
        assert denied.returncode != 0 and "401" in denied.stderr, denied.stderr
        assert [t["Label"] for t in cli.admin("admin-tokens")] == ["ops"]

        # Re-mint b's token: the old one stops working at once, the new one works.
        b_id = str(json.loads((tmp_path / "b.json").read_text())["NodeID"])
        old = json.loads((tmp_path / "b.json").read_text())["Token"]
        cli.run("control", "remint-token", "example", b_id, "--out", str(tmp_path / "b2.json"))
        new = json.loads((tmp_path / "b2.json").read_text())["Token"]
        assert new != old
        stale = b.lock("status", ok=False)  # syncs with the old token
        assert "401" in stale.stderr or "invalid token" in stale.stderr, stale.stdout + stale.stderr
        assert "tka lock login" in stale.stderr, stale.stderr  # says what fixes it
        b.lock("login", str(tmp_path / "b2.json"))
        assert b.enabled()
