"""Tailnet Lock on Headscale, end to end, with the real ``tailscale`` and ``tailscaled``.

Headscale v0.29.2 with tka's patch series is the control server, ``tka
serve`` is the authority behind it, and real Tailscale clients (built from
``tailscale.com`` at the pinned version) do everything through the real
``tailscale`` and ``headscale`` CLIs. The stack is started by the README's
commands as written (``_headscale.HeadscaleStack``). What counts is what the
clients say: ``tailscale status --json`` and ``tailscale lock status --json``.

One test walks the whole story in order, because each step builds on the
state the last one left (as an operator's tailnet does); each step's
assertion says which step failed. Skipped only where Go is absent.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _headscale import HeadscaleStack, readme_section
from _oracle import integrations_build
from _server_harness import tka_command
from _tailscale import Tailscaled, client_or_skip, wait_for

from tka import ed25519, sig

# Waits: how long a real client may take to see a change control pushed.
CONVERGE_S = 30.0
# The bound for a newly signed node to show up as a peer everywhere.
SIGNED_PEER_S = 10.0


@pytest.fixture(scope="module")
def stack() -> Iterator[HeadscaleStack]:
    binaries = client_or_skip()
    build = integrations_build()
    try:
        build.build_headscale()
    except build.GoUnavailable as exc:
        pytest.skip(str(exc))
    # Short paths: tailscaled's unix sockets live under this folder.
    root = Path(tempfile.mkdtemp(prefix="hs-"))
    s = HeadscaleStack(root, binaries)
    try:
        s.run_readme()
        yield s
    finally:
        s.cleanup()


# -- what the clients say -----------------------------------------------------------------


def lock_status(node: Tailscaled) -> dict[str, Any]:
    doc: dict[str, Any] = node.json("lock", "status", "--json")
    return doc


def tlpub(node: Tailscaled) -> str:
    text = node.cli("lock", "status").stdout
    m = re.search(r"This node's tailnet-lock key: (tlpub:[0-9a-f]{64})", text)
    assert m, f"{node.name}: no tailnet-lock key in 'lock status':\n{text}"
    return m.group(1)


def nodekey(node: Tailscaled) -> str:
    return str(node.json("status", "--json")["Self"]["PublicKey"])


def peers(node: Tailscaled) -> set[str]:
    doc = node.json("status", "--json")
    return {p["PublicKey"] for p in (doc.get("Peer") or {}).values()}


def filtered(node: Tailscaled) -> set[str]:
    return {p["NodeKey"] for p in lock_status(node).get("FilteredPeers") or []}


def converged(nodes: list[Tailscaled], past: str | None) -> str | None:
    """The head every node reports, once they all report the same one other than *past*."""
    heads = set()
    for n in nodes:
        st = lock_status(n)
        if not st["Enabled"]:
            return None
        heads.add(st.get("Head", ""))
    head = heads.pop() if len(heads) == 1 else None
    return head if head and head != past else None


def wait_converged(nodes: list[Tailscaled], what: str, past: str | None = None) -> str:
    """Wait until *nodes* agree on one head (other than *past*, the head before a change)."""
    return wait_for(what, lambda: converged(nodes, past), CONVERGE_S)


def change(node: Tailscaled, nodes: list[Tailscaled], *args: str) -> str:
    """Run ``tailscale ARGS`` on *node*, then wait until *nodes* agree on the new head."""
    before = lock_status(node).get("Head")
    out = node.cli(*args).stdout
    wait_converged(nodes, f"{' '.join(args[:2])} on {node.name} to reach every node", before)
    return out


def stays_true(check: Callable[[], bool], seconds: float) -> bool:
    """Whether *check* holds every time it is polled for *seconds* (a bounded window)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not check():
            return False
        time.sleep(0.5)
    return check()


def tka_profile(node: Tailscaled) -> Path:
    """The node's own TKA directory (Tailscale's on-disk layout)."""
    profiles = list((node.state_dir / "tka-profiles").iterdir())
    assert len(profiles) == 1, f"{node.name}: one TKA profile directory: {profiles}"
    return profiles[0]


def headscale_ids(stack: HeadscaleStack) -> dict[str, str]:
    """Headscale's node IDs by node key, from ``headscale nodes list -o json``."""
    return {n["node_key"]: str(n["id"]) for n in stack.headscale("nodes", "list")}


def tka_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*tka_command(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


# -- the story ----------------------------------------------------------------------------


def test_tailnet_lock_on_headscale_with_real_clients(stack: HeadscaleStack) -> None:
    try:
        _story(stack)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n\nservice logs:\n{stack.logs()}") from None


def _story(stack: HeadscaleStack) -> None:
    # The README created user alice (ID 1) and a key for it; the test makes its own keys.
    key = stack.preauth_key()

    # 1. Three nodes join; n1 starts the lock trusting n1's and n2's keys,
    #    with the README's init line.
    n1, n2, n3 = (stack.add_node(f"n{i}", key) for i in (1, 2, 3))
    keys = {n.name: tlpub(n) for n in (n1, n2, n3)}
    _, _, node_lines = readme_section()
    init = next(ln for ln in node_lines if ln.startswith("tailscale lock init "))
    init = init.replace("tlpub:N1", keys["n1"]).replace("tlpub:N2", keys["n2"])
    out = n1.cli(*init.split()[1:]).stdout
    secrets = re.findall(r"disablement-secret:([0-9A-F]{64})", out)
    assert len(secrets) == 1, f"step 1: one disablement secret printed:\n{out}"
    head1 = wait_converged([n1, n2, n3], "step 1: n1..n3 to report one head")
    assert head1
    for n in (n1, n2, n3):
        wait_for(
            f"step 1: {n.name} signed",
            lambda n=n: True if lock_status(n)["NodeKeySigned"] else None,
            CONVERGE_S,
        )
    trusted = {k["Public"] for k in lock_status(n3)["TrustedKeys"]}
    assert trusted == {keys["n1"], keys["n2"]}, f"step 1: trusted keys {trusted}"

    # 2. A fourth node joins: unsigned, so the others filter it out.
    n4 = stack.add_node("n4", key)
    nk4 = nodekey(n4)
    wait_for(
        "step 2: n4 knows lock is on and that it is not signed",
        lambda: True if (st := lock_status(n4))["Enabled"] and not st["NodeKeySigned"] else None,
        CONVERGE_S,
    )
    for n in (n1, n2, n3):
        wait_for(
            f"step 2: n4 among {n.name}'s FilteredPeers",
            lambda n=n: True if nk4 in filtered(n) else None,
            CONVERGE_S,
        )
        assert nk4 not in peers(n), f"step 2: unsigned n4 is a peer of {n.name}"

    # 3. n2 signs n4: it appears as a peer everywhere within 10 s.
    n2.cli("lock", "sign", nk4)
    for n in (n1, n2, n3):
        wait_for(
            f"step 3: n4 a peer of {n.name}",
            lambda n=n: True if nk4 in peers(n) else None,
            SIGNED_PEER_S,
        )
    assert lock_status(n4)["NodeKeySigned"], "step 3: n4 says it is signed"
    # The signature the real client made is one tka verifies offline.
    status, state = stack.front_request("GET", "/state")
    assert status == 200
    ids = headscale_ids(stack)
    sig4 = base64.b64decode(state["Signatures"][ids[nk4]])
    parsed = sig.NodeKeySignature.from_bytes(sig4)
    assert parsed.pubkey is not None
    assert sig.node_key_from_binary(parsed.pubkey) == bytes.fromhex(nk4.removeprefix("nodekey:"))
    # `tka lock check` admits it, offline, on the chain as n1 keeps it on disk.
    verifier = stack.root / "verifier"
    shutil.copytree(tka_profile(n1), verifier / "tka")
    sig4_b64 = base64.b64encode(sig4).decode()
    proc = tka_cli(
        "--state-dir", str(verifier), "lock", "check", nk4, sig4_b64, "--json", cwd=stack.root
    )
    assert proc.returncode == 0, f"step 3: tka lock check: {proc.stdout}{proc.stderr}"
    verdict = json.loads(proc.stdout)
    assert verdict["Admitted"] and verdict["SigningKey"] == keys["n2"], verdict
    # The data path works too: n1 reaches n4 (userspace networking, over
    # the embedded DERP or direct UDP on loopback).
    ip4 = n4.json("status", "--json")["Self"]["TailscaleIPs"][0]
    ping = n1.cli("ping", "--c", "10", "--timeout", "5s", ip4, check=False, timeout=90)
    assert ping.returncode == 0 and "pong from n4" in ping.stdout, (
        f"step 3: ping: {ping.stdout}{ping.stderr}"
    )

    # 4. A pre-auth key signed by a trusted node admits a fifth node by itself.
    plain = stack.preauth_key()
    tskey = "tskey-auth-" + plain.removeprefix("hskey-auth-")
    wrapped = n1.cli("lock", "sign", tskey).stdout.strip().splitlines()[-1]
    assert wrapped.startswith(tskey + "--TL"), f"step 4: wrapped key {wrapped!r}"
    n5 = stack.add_node("n5", wrapped)
    nk5 = nodekey(n5)
    wait_for(
        "step 4: n5 signed", lambda: True if lock_status(n5)["NodeKeySigned"] else None, CONVERGE_S
    )
    for n in (n1, n2, n3, n4):
        wait_for(
            f"step 4: n5 a peer of {n.name}",
            lambda n=n: True if nk5 in peers(n) else None,
            CONVERGE_S,
        )
    wrapping_keys = [
        k["Public"]
        for k in lock_status(n1)["TrustedKeys"]
        if (k.get("Meta") or {}).get("purpose") == "pre-auth key"
    ]
    assert len(wrapping_keys) == 1, (
        f"step 4: one wrapping key trusted: {lock_status(n1)['TrustedKeys']}"
    )

    # 5. lock add, lock remove (re-signing), then revoke the wrapping key
    #    across two real nodes: n5, signed only through it, drops out.
    everyone = [n1, n2, n3, n4, n5]
    change(n1, everyone, "lock", "add", keys["n3"])
    change(n1, everyone, "lock", "remove", keys["n2"])
    trusted = {k["Public"] for k in lock_status(n4)["TrustedKeys"]}
    assert trusted == {keys["n1"], keys["n3"], *wrapping_keys}, f"step 5: after remove {trusted}"
    for n in (n1, n2, n3):
        assert nk4 in peers(n), (
            f"step 5: n4 (signed by the removed key, re-signed) still a peer of {n.name}"
        )
    out = n1.cli("lock", "revoke-keys", wrapping_keys[0]).stdout
    blob = re.search(r"--cosign ([0-9A-F]+)", out)
    assert blob, f"step 5: revoke-keys printed no recovery blob:\n{out}"
    # The recovery forks from before the wrapping key was trusted, where only
    # N1 and N2 were: so n2 co-signs (its key counts there, though removed
    # since), as Tailscale's rules require.
    out = n2.cli("lock", "revoke-keys", "--cosign", blob.group(1)).stdout
    blob = re.search(r"--finish ([0-9A-F]+)", out)
    assert blob, f"step 5: --cosign printed no --finish blob:\n{out}"
    change(n2, [n1, n2, n3, n4], "lock", "revoke-keys", "--finish", blob.group(1))
    trusted = {k["Public"] for k in lock_status(n4)["TrustedKeys"]}
    assert trusted == {keys["n1"], keys["n3"]}, f"step 5: after the recovery {trusted}"
    for n in (n1, n2, n3, n4):
        wait_for(
            f"step 5: n5 (signed only via the revoked key) filtered by {n.name}",
            lambda n=n: True if nk5 not in peers(n) and nk5 in filtered(n) else None,
            CONVERGE_S,
        )

    # 6. The node's log and its own TKA directory audit to the same head.
    audit_dir = stack.root / "audit"
    audit_dir.mkdir()
    log1 = audit_dir / "log1.json"
    log1.write_text(n1.cli("lock", "log", "--json", "--limit", "1000").stdout)
    proc = tka_cli("audit", str(log1), "--pin", "tailnet.pin", "--json", cwd=audit_dir)
    assert proc.returncode == 0, f"step 6: first audit: {proc.stdout}{proc.stderr}"
    head_now = lock_status(n1)["Head"]
    assert json.loads(proc.stdout)["outcome"]["head"] == head_now
    change(n1, [n1, n2, n3, n4], "lock", "add", keys["n2"])
    head_later = lock_status(n1)["Head"]
    log2 = audit_dir / "log2.json"
    log2.write_text(n1.cli("lock", "log", "--json", "--limit", "1000").stdout)
    proc = tka_cli("audit", str(log2), "--pin", "tailnet.pin", "--json", cwd=audit_dir)
    assert proc.returncode == 0, f"step 6: second audit: {proc.stdout}{proc.stderr}"
    doc = json.loads(proc.stdout)
    assert doc["pin"]["status"] == "extends" and doc["outcome"]["head"] == head_later
    proc = tka_cli("audit", str(tka_profile(n1)), "--json", cwd=audit_dir)
    assert proc.returncode == 0, f"step 6: audit of n1's TKA dir: {proc.stdout}{proc.stderr}"
    assert json.loads(proc.stdout)["head"] == head_later

    # 6b. Recovery across implementations: a tka node holding a trusted key
    #     co-signs the hex blob `tailscale lock revoke-keys` prints, and the
    #     real client finishes with the blob tka wrote.
    tnode = stack.root / "tka-node"
    proc = tka_cli("--state-dir", str(tnode), "lock", "key", cwd=stack.root)
    assert proc.returncode == 0, f"step 6b: tka lock key: {proc.stderr}"
    tka_key = re.search(r"tlpub:[0-9a-f]{64}", proc.stdout)
    assert tka_key, proc.stdout
    change(n1, [n1, n2, n3, n4], "lock", "add", tka_key.group(0))
    doomed = tka_cli("--state-dir", str(stack.root / "doomed"), "lock", "key", cwd=stack.root)
    doomed_key = re.search(r"tlpub:[0-9a-f]{64}", doomed.stdout)
    assert doomed_key, doomed.stdout + doomed.stderr
    change(n1, [n1, n2, n3, n4], "lock", "add", doomed_key.group(0))
    # The tka node holds the chain as n1 keeps it on disk (Tailscale's layout).
    shutil.rmtree(tnode / "tka", ignore_errors=True)
    shutil.copytree(tka_profile(n1), tnode / "tka")
    out = n1.cli("lock", "revoke-keys", doomed_key.group(0)).stdout
    blob = re.search(r"--cosign ([0-9A-F]+)", out)
    assert blob, f"step 6b: revoke-keys printed no recovery blob:\n{out}"
    recovery = stack.root / "rec.tka"
    recovery.write_text(blob.group(1) + "\n")
    proc = tka_cli(
        "--state-dir", str(tnode), "lock", "revoke-keys", "--cosign", str(recovery), cwd=stack.root
    )
    assert proc.returncode == 0, (
        f"step 6b: tka cosign of Tailscale's blob: {proc.stdout}{proc.stderr}"
    )
    cosigned = recovery.read_text().strip()
    assert cosigned != blob.group(1) and re.fullmatch(r"[0-9A-F]+", cosigned)
    change(n1, [n1, n2, n3, n4], "lock", "revoke-keys", "--finish", cosigned)
    trusted = {k["Public"] for k in lock_status(n4)["TrustedKeys"]}
    assert doomed_key.group(0) not in trusted and tka_key.group(0) in trusted, trusted

    # 8. A node the operator adds alone stays invisible; a signature made by
    #    no trusted key is not kept, even when the front feeds it.
    n6 = stack.add_node("n6", stack.preauth_key())
    nk6 = nodekey(n6)
    for n in (n1, n2, n3, n4):
        wait_for(
            f"step 8: n6 filtered by {n.name}",
            lambda n=n: True if nk6 in filtered(n) else None,
            CONVERGE_S,
        )
        assert nk6 not in peers(n), f"step 8: n6 (no signature) is a peer of {n.name}"
    rogue_seed = ed25519.generate_seed()
    forged = sig.sign_direct(rogue_seed, bytes.fromhex(nk6.removeprefix("nodekey:")))
    ids = headscale_ids(stack)
    status, answer = stack.front_request(
        "PUT",
        f"/nodes/{ids[nk6]}",
        {"NodeKey": nk6, "NLKey": "", "KeySignature": base64.b64encode(forged.to_bytes()).decode()},
    )
    assert status == 200 and answer["Admitted"] is False, f"step 8: forged signature kept: {answer}"
    status, state = stack.front_request("GET", "/state")
    assert ids[nk6] not in state["Signatures"], "step 8: tka serve hands out the forged signature"
    for n in (n1, n2, n3, n4):
        assert nk6 not in peers(n), f"step 8: n6 became a peer of {n.name}"
    # Even a control plane that hands the forged signature out (written
    # straight into tka serve's database, as a compromised server might) does
    # not get n6 in: the real clients verify it against their own chain.
    with sqlite3.connect(stack.work / "tka.db") as db:
        (seq,) = db.execute(
            "UPDATE tailnets SET seq = seq + 1 WHERE name = 'example' RETURNING seq"
        ).fetchone()
        db.execute(
            "UPDATE nodes SET signature = ? WHERE tailnet = 'example' AND front_id = ?",
            (forged.to_bytes(), int(ids[nk6])),
        )
        db.execute(
            "INSERT INTO sig_changes (tailnet, front_id, seq, deleted) VALUES ('example', ?, ?, 0) "
            "ON CONFLICT (tailnet, front_id) DO UPDATE SET seq = excluded.seq, deleted = 0",
            (int(ids[nk6]), seq),
        )
    wait_for(
        "step 8: tka serve hands out the injected signature",
        lambda: True if ids[nk6] in stack.front_request("GET", "/state")[1]["Signatures"] else None,
        CONVERGE_S,
    )
    stays_out = stays_true(
        lambda: all(nk6 not in peers(n) and nk6 in filtered(n) for n in (n1, n2, n3, n4)),
        seconds=8.0,
    )
    assert stays_out, "step 8: a node with a forged signature became a peer"
    assert not lock_status(n6)["NodeKeySigned"], "step 8: n6 believes the forged signature"

    # 7. Disable with the secret: every node, including one stopped during
    #    the disable and started after it, reports lock off.
    n3.stop()
    n1.cli("lock", "disable", f"disablement-secret:{secrets[0]}")
    n3.start()
    for n in (n1, n2, n3, n4):
        wait_for(
            f"step 7: {n.name} reports lock disabled",
            lambda n=n: True if not lock_status(n)["Enabled"] else None,
            CONVERGE_S,
        )
