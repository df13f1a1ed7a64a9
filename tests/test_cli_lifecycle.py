"""End to end: the lock lifecycle as people run it (issue 13), one test per reported item.

Every test runs the installed ``tka`` console script in subprocesses, the
way the help texts show, and is written from the reproduction in the
issue: each failed (or passed for the wrong reason) before the fix.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TKA = str(Path(sys.executable).with_name("tka"))


def run(
    *args: str,
    ok: bool = True,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [TKA, *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        env=env,
        cwd=cwd,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    if ok:
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("tka: error: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


class Node:
    """A state directory driven through ``tka --state-dir DIR lock ...``."""

    def __init__(self, root: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.dir = str(root / name)
        self.root = root
        self.name = name
        self.env = env
        self._n = 0

    def lock(self, *args: str, ok: bool = True, stdin: str | None = None) -> Any:
        return run("lock", "--state-dir", self.dir, *args, ok=ok, stdin=stdin, env=self.env)

    def key(self) -> str:
        return str(self.lock("key").stdout.strip())

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.lock("status", "--json").stdout))

    def export(self) -> str:
        self._n += 1
        path = str(self.root / f"{self.name}-{self._n}.json")
        self.lock("export", path)
        return path

    def trusted(self) -> set[str]:
        return {k["Public"] for k in self.status()["TrustedKeys"]}


def _nodekey() -> str:
    return "nodekey:" + os.urandom(32).hex()


# -- 1. revocation: only keys trusted at the fork point, and not the revoked ones, sign --


def test_revocation_refuses_signers_not_trusted_at_the_fork_point(tmp_path: Path) -> None:
    a, b, d = (Node(tmp_path, n) for n in ("a", "b", "d"))
    ka, kb, kd = a.key(), b.key(), d.key()
    a.lock("init", "--confirm", ka, f"{kb}?2")
    a.lock("add", kd)
    bundle = a.export()
    b.lock("import", bundle)
    d.lock("import", bundle)
    rec = str(tmp_path / "rec.tka")

    # D was added after the fork point (genesis): it may not start the recovery.
    started = d.lock("revoke-keys", ka, "--out", rec, ok=False)
    assert started.returncode == 1
    assert "not trusted at the fork point" in one_error_line(started)
    assert not os.path.exists(rec)

    # B was trusted there: it starts, and the vote count is B's two votes.
    out = b.lock("revoke-keys", ka, "--out", rec).stdout
    assert "2 votes against 1" in out
    # D co-signing is refused, and so is the key being revoked.
    for node, why in ((d, "not trusted at the fork point"), (a, "being revoked")):
        before = Path(rec).read_text()
        proc = node.lock("revoke-keys", "--cosign", rec, ok=False)
        assert proc.returncode == 1 and why in one_error_line(proc)
        assert Path(rec).read_text() == before  # nothing was added to the file

    # The recovery finishes, on the node that started it and on the other one.
    b.lock("revoke-keys", "--finish", rec)
    d.lock("revoke-keys", "--finish", rec)
    assert ka not in b.trusted() and ka not in d.trusted()
    a.lock("import", b.export())
    assert a.status()["Head"] == b.status()["Head"] == d.status()["Head"]


# -- 2. keys the revoked keys added are named, and --with-added revokes them ----------------


def test_revoke_keys_names_what_the_revoked_key_added_and_can_revoke_it(
    tmp_path: Path,
) -> None:
    x, y, z = (Node(tmp_path, n) for n in ("x", "y", "z"))
    kx, ky, kz = x.key(), y.key(), z.key()
    x.lock("init", "--confirm", kx, ky, kz)
    z.lock("import", x.export())
    zz = run("keygen", str(tmp_path / "zz.key")).stdout.strip()
    z.lock("add", zz)  # the compromised key adds another
    victim = _nodekey()
    z.lock("sign", victim)
    x.lock("import", z.export())

    rec = str(tmp_path / "rec.tka")
    out = x.lock("revoke-keys", kz, "--out", rec).stdout
    assert "STAY TRUSTED" in out and zz in out and f"added by {kz}" in out
    assert "--with-added" in out
    # The node z signed is named too: x learnt of it from z's export.
    assert f"{victim} (signed by {kz})" in out
    y.lock("import", x.export())
    y.lock("revoke-keys", "--cosign", rec)
    out = x.lock("revoke-keys", "--finish", rec).stdout
    assert zz in out  # named again when it is applied
    assert x.trusted() == {kx, ky, zz}

    # Again on a fresh set of nodes, revoking what it added too.
    x2, y2, z2 = (Node(tmp_path, n) for n in ("x2", "y2", "z2"))
    kx2, ky2, kz2 = x2.key(), y2.key(), z2.key()
    x2.lock("init", "--confirm", kx2, ky2, kz2)
    z2.lock("import", x2.export())
    zz2 = run("keygen", str(tmp_path / "zz2.key")).stdout.strip()
    z2.lock("add", zz2)
    x2.lock("import", z2.export())
    rec2 = str(tmp_path / "rec2.tka")
    out = x2.lock("revoke-keys", kz2, "--with-added", "--out", rec2).stdout
    assert "Also revoked" in out and zz2 in out
    y2.lock("import", x2.export())
    y2.lock("revoke-keys", "--cosign", rec2)
    x2.lock("revoke-keys", "--finish", rec2)
    assert x2.trusted() == {kx2, ky2}

    # The help says what is and is not erased.
    help_text = run("lock", "revoke-keys", "--help").stdout
    assert "NOT erased" in help_text and "--with-added" in help_text


# -- 5. import says when this node lost a fork; a way back from local-disable / disable -----


def test_import_names_the_updates_this_node_lost_to_a_fork(tmp_path: Path) -> None:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    ka, kb = a.key(), b.key()
    a.lock("init", "--confirm", ka, kb)
    b.lock("import", a.export())
    k1 = run("keygen", str(tmp_path / "k1.key")).stdout.strip()
    k2 = run("keygen", str(tmp_path / "k2.key")).stdout.strip()
    a.lock("add", k1)
    b.lock("add", k2)  # concurrent: one of the two loses the tie-break
    from_a, from_b = a.export(), b.export()
    out_a = a.lock("import", from_b).stdout
    out_b = b.lock("import", from_a).stdout
    lost = [out for out in (out_a, out_b) if "lost a fork" in out]
    assert len(lost) == 1, (out_a, out_b)
    assert "(add-key)" in lost[0]
    assert a.status()["Head"] == b.status()["Head"]


def test_local_disable_has_a_way_back(tmp_path: Path) -> None:
    a = Node(tmp_path, "a")
    a.lock("init", "--confirm", a.key())
    out = a.lock("local-disable").stdout
    assert "local-enable" in out
    assert a.status()["Enabled"] is False
    assert "local-enable" in a.lock("status").stdout
    a.lock("local-enable")
    assert a.status()["Enabled"] is True
    a.lock("sign", _nodekey())


def test_a_new_lock_after_an_offline_disable_and_peers_follow_it(tmp_path: Path) -> None:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    ka, kb = a.key(), b.key()
    out = a.lock("init", "--confirm", ka, kb).stdout
    (secret,) = re.findall(r"disablement-secret:[0-9A-F]{64}", out)
    b.lock("import", a.export())
    a.lock("disable", secret)
    b.lock("import", a.export())
    assert b.status()["Enabled"] is False
    # The way back: a new lock, on a signing node; the old chain is kept aside.
    out = a.lock("init", "--confirm", ka, kb).stdout
    assert "old chain" in out
    assert a.status()["Enabled"] is True
    assert any(p.name.startswith("old-chain-") for p in Path(a.dir).iterdir())
    # A node that learnt the disablement follows the new lock by importing it.
    out = b.lock("import", a.export()).stdout
    assert "new authority" in out
    assert b.status()["Enabled"] is True and b.status()["Head"] == a.status()["Head"]


# -- 6. global options before or after the subcommand; --debug and usage errors -----------


def test_global_options_work_before_or_after_the_subcommand(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("secret words\n")
    d = str(tmp_path / "n")
    key = run("--state-dir", d, "--passphrase-file", str(pw), "lock", "key").stdout.strip()
    assert run("lock", "--state-dir", d, "key").stdout.strip() == key
    assert run("lock", "key", "--state-dir", d).stdout.strip() == key
    run("lock", "init", "--confirm", key, "--state-dir", d, "--passphrase-file", str(pw))
    for args in (
        ["--state-dir", d, "--lock-timeout", "2", "lock", "status"],
        ["lock", "--state-dir", d, "--debug", "status"],
        ["lock", "status", "--state-dir", d, "--debug", "--lock-timeout", "2"],
        ["--debug", "lock", "status", "--state-dir", d],
    ):
        assert "ENABLED" in run(*args).stdout, args
    # The examples of 'tka lock --help' as written (state dir 'node2').
    node1 = Node(tmp_path, "node1")
    node1.lock("init", "--confirm", node1.key())
    exported = str(tmp_path / "a.json")
    node1.lock("export", exported)
    run("--state-dir", "node2", "lock", "key", cwd=str(tmp_path))
    run("--state-dir", "node2", "lock", "import", exported, cwd=str(tmp_path))
    # A usage mistake with --debug: one line, no click traceback.
    proc = run("lock", "status", "--debug", "--state-dir", d, "--no-such-option", ok=False)
    assert proc.returncode == 2 and "no-such-option" in one_error_line(proc)
    proc = run("--debug", "lock", "frobnicate", ok=False)
    assert proc.returncode == 2
    one_error_line(proc)
    proc = run("lock", "log", "--limit", "0", "--debug", "--state-dir", d, ok=False)
    assert proc.returncode == 2 and "--limit" in one_error_line(proc)


def test_export_to_stdout_and_import_from_stdin(tmp_path: Path) -> None:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    a.lock("init", "--confirm", a.key())
    b.key()
    bundle = a.lock("export", "-").stdout
    assert json.loads(bundle)["format"] == "tka-bundle/1"
    b.lock("import", "-", stdin=bundle)
    assert b.status()["Head"] == a.status()["Head"]


# -- 7. a typo in --state-dir does not make an empty node ---------------------------------


def test_a_missing_state_dir_is_exit_3_and_not_created(tmp_path: Path) -> None:
    typo = tmp_path / "nod1"
    for cmd in (["status"], ["log"], ["sign", _nodekey()], ["export", str(tmp_path / "x")]):
        proc = run("--state-dir", str(typo), "lock", *cmd, ok=False)
        assert proc.returncode == 3, (cmd, proc.stderr)
        assert str(typo) in one_error_line(proc) and "does not exist" in proc.stderr
        assert not typo.exists()
    # Commands that create a node do create it.
    run("--state-dir", str(typo), "lock", "key")
    assert typo.is_dir()


# -- 8. writing into a missing folder ------------------------------------------------------


def test_writing_into_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    a = Node(tmp_path, "a")
    b = Node(tmp_path, "b")
    ka, kb = a.key(), b.key()
    a.lock("init", "--confirm", ka, kb)
    missing = tmp_path / "no" / "dir"
    for args in (
        ["export", str(missing / "x.json")],
        ["revoke-keys", kb, "--out", str(missing / "r.tka")],
    ):
        proc = a.lock(*args, ok=False)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "does not exist" in one_error_line(proc) and "internal error" not in proc.stderr
    store = f"sqlite:///{tmp_path}/control.db"
    proc = run("control", "admin-token", "--store", store, "--out", str(missing / "t"), ok=False)
    assert proc.returncode == 2 and "does not exist" in one_error_line(proc)
    proc = run("keygen", str(missing / "k.key"), ok=False)
    assert proc.returncode == 2 and "does not exist" in one_error_line(proc)


# -- 10. the disablement secret off the command line; 0600 files; size caps ----------------


def test_disable_reads_the_secret_from_stdin_or_a_file_and_exports_it_0600(
    tmp_path: Path,
) -> None:
    a, b = Node(tmp_path, "a"), Node(tmp_path, "b")
    out = a.lock("init", "--gen-disablements", "2", "--confirm", a.key()).stdout
    s1, s2 = re.findall(r"disablement-secret:[0-9A-F]{64}", out)
    b.key()
    b.lock("import", a.export())
    wrong = tmp_path / "wrong"
    wrong.write_text("disablement-secret:" + "00" * 32 + "\n")
    proc = a.lock("disable", "--secret-file", str(wrong), ok=False)
    assert proc.returncode == 1
    assert s1 not in proc.stderr
    proc = a.lock("disable", ok=False)
    assert proc.returncode == 2 and "stdin" in one_error_line(proc)
    proc = a.lock("disable", "-", stdin="\n", ok=False)  # nothing piped in
    assert proc.returncode == 2 and "no disablement secret" in one_error_line(proc)
    a.lock("disable", "-", stdin=s1 + "\n")
    path = a.export()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert s1[len("disablement-secret:") :].lower() in Path(path).read_text()
    secret_file = tmp_path / "s2.txt"
    secret_file.write_text(s2 + "\n")
    b.lock("disable", "--secret-file", str(secret_file))
    assert b.status()["Enabled"] is False
    value = run("lock", "disablement-kdf", "-", stdin=s2).stdout.strip()
    assert value.startswith("disablement:")


def test_oversized_inputs_are_refused_before_they_are_read(tmp_path: Path) -> None:
    a = Node(tmp_path, "a")
    a.lock("init", "--confirm", a.key())
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(3 * 1024**3)  # sparse: 3 GiB without using the disk
    for args in (["import", str(huge)], ["revoke-keys", "--finish", str(huge)]):
        started = time.monotonic()
        proc = a.lock(*args, ok=False)
        assert time.monotonic() - started < 10
        assert proc.returncode == 2 and "allowed" in one_error_line(proc), proc.stderr
    proc = a.lock("sign", "--from", str(huge), ok=False)
    assert proc.returncode == 2 and "allowed" in one_error_line(proc)


# -- 11. resign refuses what check would refuse ---------------------------------------------


def test_resign_refuses_a_wrong_rotation_key_or_a_direct_signature(tmp_path: Path) -> None:
    a = Node(tmp_path, "a")
    a.lock("init", "--confirm", a.key())
    rot = str(tmp_path / "rot.key")
    other = str(tmp_path / "other.key")
    rot_pub = run("keygen", rot).stdout.strip()
    run("keygen", other)
    n1, n2 = _nodekey(), _nodekey()
    with_rotation = a.lock("sign", n1, rot_pub).stdout.strip()
    direct = a.lock("sign", _nodekey()).stdout.strip()
    proc = run("lock", "resign", n2, with_rotation, "--rotation-key", other, ok=False)
    assert proc.returncode == 1 and "names the rotation key" in one_error_line(proc)
    assert proc.stdout == ""
    proc = run("lock", "resign", n2, direct, "--rotation-key", rot, ok=False)
    assert proc.returncode == 1 and "no rotation key" in one_error_line(proc)
    good = run("lock", "resign", n2, with_rotation, "--rotation-key", rot).stdout.strip()
    a.lock("check", n2, good)


# -- 12. sign --from names the bad line and signs nothing; progress only on a terminal ------


def test_sign_from_names_the_bad_line_and_signs_nothing(tmp_path: Path) -> None:
    a = Node(tmp_path, "a")
    a.lock("init", "--confirm", a.key())
    nodes = tmp_path / "nodes.txt"
    good = [_nodekey() for _ in range(3)]
    nodes.write_text(f"# fleet\n{good[0]}\n{good[1]}\nnodekey:12\n\n{good[2]}\n")
    proc = a.lock("sign", "--from", str(nodes), ok=False)
    assert proc.returncode == 2
    assert f"{nodes} line 4" in proc.stderr and "nothing was signed" in proc.stderr
    assert proc.stdout == ""
    assert not os.path.exists(os.path.join(a.dir, "signatures.json"))
    nodes.write_text("\n".join(good) + "\n")
    proc = a.lock("sign", "--from", str(nodes), "--json")
    assert [o["NodeKey"] for o in json.loads(proc.stdout)] == good
    assert proc.stderr == ""  # not a terminal: no progress bar


def test_sign_from_shows_progress_on_a_terminal_unless_quiet(tmp_path: Path) -> None:
    pty = pytest.importorskip("pty")
    a = Node(tmp_path, "a")
    a.lock("init", "--confirm", a.key())
    nodes = tmp_path / "nodes.txt"
    nodes.write_text("\n".join(_nodekey() for _ in range(300)) + "\n")

    def stderr_on_tty(*extra: str) -> str:
        master, slave = pty.openpty()
        try:
            proc = subprocess.run(
                [TKA, "--state-dir", a.dir, "lock", "sign", "--from", str(nodes), *extra],
                stdout=subprocess.DEVNULL,
                stderr=slave,
                stdin=subprocess.DEVNULL,
                timeout=120,
            )
            assert proc.returncode == 0
            os.close(slave)
            slave = -1
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks).decode(errors="replace")
        finally:
            os.close(master)
            if slave >= 0:
                os.close(slave)

    assert "Signing" in stderr_on_tty()
    assert "Signing" not in stderr_on_tty("--quiet")


# -- low: --version, python -m tka, help examples, --gen-disablement-for-support ------------


def test_version_and_python_dash_m() -> None:
    from tka import __version__

    assert run("--version").stdout.strip() == f"tka {__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "tka", "--version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"tka {__version__}"


LOCK_COMMANDS = [
    "key",
    "init",
    "status",
    "log",
    "add",
    "remove",
    "sign",
    "check",
    "resign",
    "sign-with-authkey",
    "disable",
    "local-disable",
    "local-enable",
    "disablement-kdf",
    "revoke-keys",
    "export",
    "import",
    "node-key",
    "login",
    "sync",
    "rotate-node-key",
]
CONTROL_COMMANDS = [
    "admin-token",
    "create-tailnet",
    "tailnets",
    "status",
    "register",
    "nodes",
    "locked-out",
    "log",
    "affected-sigs",
    "remove-node",
    "allow-init",
    "remint-token",
    "admin-tokens",
    "revoke-admin-token",
]


def test_every_command_has_help_with_an_example() -> None:
    commands = [
        [],
        ["lock"],
        ["control"],
        ["serve"],
        ["audit"],
        ["vectors"],
        ["keygen"],
        ["demo"],
        *[["lock", c] for c in LOCK_COMMANDS],
        *[["control", c] for c in CONTROL_COMMANDS],
    ]
    missing = [c for c in commands if "Example" not in run(*c, "--help").stdout]
    assert not missing


def test_vectors_kinds_match_the_runner() -> None:
    from tka_cli.vectors_cmd import KINDS as CLI_KINDS

    from tka.conformance import KINDS

    assert set(CLI_KINDS) == set(KINDS)


def test_gen_disablement_for_support_without_control_is_refused(tmp_path: Path) -> None:
    a = Node(tmp_path, "a")
    proc = a.lock("init", "--confirm", "--gen-disablement-for-support", a.key(), ok=False)
    assert proc.returncode == 2 and "control" in one_error_line(proc)
    assert a.status()["Enabled"] is False


# -- control flows: a real 'tka serve' on loopback ------------------------------------------


class Control:
    """A ``tka serve`` on a free loopback port with a fresh SQLite store and an admin token."""

    def __init__(self, root: Path) -> None:
        self.root = root
        store = f"sqlite:///{root}/control.db"
        token = root / "admin.token"
        run("control", "admin-token", "--store", store, "--out", str(token))
        port_file = root / "port"
        self.log = open(root / "server.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                TKA,
                "serve",
                "--store",
                store,
                "--listen",
                "127.0.0.1:0",
                "--port-file",
                str(port_file),
            ],
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert self.proc.poll() is None, (root / "server.log").read_text()
            assert time.monotonic() < deadline, "tka serve did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"
        self.env = {
            **os.environ,
            "TKA_CONTROL_URL": self.url,
            "TKA_ADMIN_TOKEN_FILE": str(token),
        }

    def admin(self, *args: str) -> Any:
        return json.loads(run("control", *args, "--json", env=self.env).stdout)

    def node(self, tailnet: str, name: str, *, nl_key: bool = True) -> Node:
        n = Node(self.root, name, self.env)
        key = n.key() if nl_key else None
        nk = n.lock("node-key").stdout.strip()
        cred = self.root / f"{name}.cred"
        extra = ["--nl-key", key] if key else []
        run(
            "control",
            "register",
            tailnet,
            nk,
            "--name",
            name,
            "--may-init",
            *extra,
            "--out",
            str(cred),
            env=self.env,
        )
        n.lock("--control", self.url, "login", str(cred))
        return n

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Control]:
    pytest.importorskip("uvicorn")
    c = Control(tmp_path)
    try:
        yield c
    finally:
        c.close()


def test_nodes_converge_after_disable_and_a_new_init_through_control(control: Control) -> None:
    run("control", "create-tailnet", "t", env=control.env)
    a, b, c = (control.node("t", n) for n in ("a", "b", "c"))
    ka, kb = a.key(), b.key()
    out = a.lock("init", "--confirm", ka, kb).stdout
    (secret,) = re.findall(r"disablement-secret:[0-9A-F]{64}", out)
    assert b.status()["Enabled"] and c.status()["Enabled"]
    a.lock("disable", secret)
    assert control.admin("status", "t")["Status"] == "disabled"
    assert not b.status()["Enabled"] and not c.status()["Enabled"]
    # A fresh init from another node: every older node follows it on status/sync.
    b.lock("init", "--confirm", kb)
    head = control.admin("status", "t")["Head"]
    assert b.status()["Head"] == head
    assert c.status()["Enabled"] and c.status()["Head"] == head
    sync = json.loads(a.lock("sync", "--json").stdout)
    assert sync["Head"] == head
    assert a.status()["Enabled"] and a.trusted() == {kb}


def test_status_says_whether_this_node_is_signed_through_control(control: Control) -> None:
    run("control", "create-tailnet", "t", env=control.env)
    a = control.node("t", "a")
    a.lock("init", "--confirm", a.key())
    doc = a.status()
    assert doc["NodeKeySigned"] is True and doc["NodeKeySignature"]["SigKind"] == "direct"
    assert "accessible under tailnet lock" in a.lock("status").stdout
    # A node registered after init is locked out until a signer signs it.
    f = control.node("t", "f")
    text = f.lock("status").stdout
    assert "LOCKED OUT" in text, text
    f_key = f.lock("node-key").stdout.strip()
    assert f.status()["NodeKeySigned"] is False
    rows = run("control", "nodes", "t", env=control.env).stdout.splitlines()
    assert rows[0].split("\t")[:4] == ["NODE-ID", "NAME", "NODE-KEY", "DECISION"]
    assert any(f_key in r and "LOCKED OUT" in r for r in rows)
    assert run("control", "locked-out", "t", env=control.env).stdout.startswith("NODE-ID")
    a.lock("sign", f_key)
    assert f.status()["NodeKeySigned"] is True
    assert "accessible" in f.lock("status").stdout


def test_revoke_keys_names_the_nodes_the_revoked_key_signed(control: Control) -> None:
    run("control", "create-tailnet", "t", env=control.env)
    a, b = control.node("t", "a"), control.node("t", "b")
    ka, kb = a.key(), b.key()
    a.lock("init", "--confirm", ka, kb)
    d = control.node("t", "d", nl_key=False)
    d_key = d.lock("node-key").stdout.strip()
    b.lock("status")  # b learns of the init
    b.lock("sign", d_key)
    out = a.lock("revoke-keys", kb, "--out", str(control.root / "r.tka")).stdout
    assert "Nodes signed by revoked keys" in out and f"{d_key} (signed by {kb})" in out


def test_tka_lock_honours_tka_control_url(control: Control, tmp_path: Path) -> None:
    run("control", "create-tailnet", "t", env=control.env)
    # No credentials yet: init through control is refused instead of a local lock.
    lone = Node(tmp_path, "lone", control.env)
    proc = lone.lock("init", "--confirm", lone.key(), ok=False)
    assert proc.returncode == 1 and "credentials for control" in one_error_line(proc)
    assert not (Path(lone.dir) / "tka").exists()
    a = control.node("t", "a")
    a.lock("init", "--confirm", a.key())
    assert control.admin("status", "t")["Status"] == "enabled"


def test_gen_disablement_for_support_goes_to_control(control: Control) -> None:
    run("control", "create-tailnet", "t", env=control.env)
    a = control.node("t", "a")
    out = a.lock("init", "--confirm", "--gen-disablement-for-support", a.key()).stdout
    assert "sent to it" in out
    assert len(re.findall(r"disablement-secret:", out)) == 1  # only the printed one


# -- help examples, run as written -----------------------------------------------------------

#: (command whose --help shows it, the example line) in an order that makes sense
#: on one node; examples with placeholders (tlpub:.., nodekey:3c..) are covered by
#: the tests above with real values.
LITERAL_EXAMPLES = [
    (["lock", "key"], "tka lock key"),
    (["lock", "key"], "tka --debug lock --state-dir ./node1 --passphrase-file pw.txt key"),
    (["lock", "status"], "tka lock status --json"),
    (["lock", "log"], "tka lock log --limit 10 --json > log.json"),
    (["lock", "sign"], "tka lock sign --from nodes.txt --json"),
    (["lock", "node-key"], "tka lock node-key --json"),
    (["keygen"], "tka keygen rotation.key"),
    (["lock", "local-disable"], "tka lock local-disable"),
    (["lock", "local-enable"], "tka lock local-enable"),
    (["lock", "disablement-kdf"], "tka lock disablement-kdf - < secret.txt"),
    (["lock", "disable"], "tka lock disable --secret-file secret.txt"),
    (["lock", "disable"], "tka lock disable - < secret.txt"),
    (["demo"], "tka demo"),
]


def test_literal_help_examples_run_as_written(tmp_path: Path) -> None:
    env = {**os.environ, "TKA_STATE_DIR": str(tmp_path / "state")}
    env.pop("TKA_CONTROL_URL", None)
    key = run("lock", "key", env=env).stdout.strip()
    out = run("lock", "init", "--confirm", key, env=env).stdout
    (secret,) = re.findall(r"disablement-secret:[0-9A-F]{64}", out)
    (tmp_path / "secret.txt").write_text(secret + "\n")
    (tmp_path / "pw.txt").write_text("a passphrase\n")
    (tmp_path / "nodes.txt").write_text(_nodekey() + "\n" + _nodekey() + "\n")
    bin_dir = str(Path(TKA).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    for command, example in LITERAL_EXAMPLES:
        assert example in run(*command, "--help").stdout, (command, example)
        proc = subprocess.run(
            example,
            shell=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, (example, proc.stdout, proc.stderr)
    assert json.loads((tmp_path / "log.json").read_text())


def test_a_node_that_lost_a_fork_through_control_is_told_what_was_dropped(
    control: Control,
) -> None:
    run("control", "create-tailnet", "t", env=control.env)
    a, b = control.node("t", "a"), control.node("t", "b")
    a.lock("init", "--confirm", a.key(), b.key())
    b.lock("status")  # b is at the genesis
    k1 = run("keygen", str(control.root / "k1.key")).stdout.strip()
    k2 = run("keygen", str(control.root / "k2.key")).stdout.strip()
    a.lock("add", k1)
    added_on_b = b.lock("add", k2)  # forks from the genesis: one of the two changes loses
    status_on_a = a.lock("status")
    told = [p.stderr for p in (added_on_b, status_on_a) if "lost a fork" in p.stderr]
    assert len(told) == 1, (added_on_b.stderr, status_on_a.stderr)
    assert "(add-key)" in told[0]
    assert a.status()["Head"] == b.status()["Head"] == control.admin("status", "t")["Head"]
