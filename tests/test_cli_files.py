"""Writing never destroys what was at the path; '-' means stdout (README, "Files").

Every command that writes a file the user names is run through the
installed ``tka`` against each kind of thing that may already be there: a
FIFO, a folder, a symbolic link to a file, a dangling one, a device, a
regular file (with and without --force), nothing, and '-'. After each
refusal the test checks that what was there is exactly as it was.

/dev/null itself is used only where it cannot be destroyed: by a user who
is not root (who cannot rename over it), or through a link in the test's
own folder (a regression would replace the link, not the device). As root
the device cases use a null device node made in the test's folder.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_cli_lifecycle import run

TKA = str(Path(sys.executable).with_name("tka"))

#: What may already be at a path, for the commands that refuse all of them
#: (secrets) and the commands that write through FIFOs and /dev/null.
REFUSED_ALWAYS = ["dir", "link-file", "link-dangling", "device"]
ALL_KINDS = ["fifo", *REFUSED_ALWAYS, "regular"]


def refused(proc: subprocess.CompletedProcess[str], path: str, *words: str) -> str:
    """Exit 2, one error line naming *path* and what is there."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("tka: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert path in proc.stderr, proc.stderr
    for w in words:
        assert w in proc.stderr, (w, proc.stderr)
    return proc.stderr


# -- what is at the path ----------------------------------------------------------------

#: The words the error uses for each kind.
WORDS = {
    "fifo": "a FIFO",
    "dir": "directory",
    "link-file": "a symbolic link to",
    "link-dangling": "leads nowhere",
    "device": "a character device",
    "regular": "--force",
}


@dataclass
class Target:
    """Something placed at a path, and a check that it is still exactly there."""

    kind: str
    path: str
    intact: Callable[[], None]


def _null_device(folder: Path) -> str:
    """A null device this test may lose: /dev/null for a user, a node under *folder* for root."""
    if os.geteuid() != 0:
        return os.devnull  # only root could rename over it
    path = folder / "null-device"
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.stat(os.devnull).st_rdev)
    except OSError as exc:  # no CAP_MKNOD in this container
        pytest.skip(f"as root, the device case needs a device node of its own: {exc}")
    return str(path)


def place(kind: str, folder: Path, name: str = "out") -> Target:
    """Put a *kind* at *folder*/*name* (for "device", a null device) and return it."""
    path = folder / name
    if kind == "fifo":
        os.mkfifo(path)
        return Target(kind, str(path), lambda: _is(path, stat.S_ISFIFO))
    if kind == "dir":
        path.mkdir()
        (path / "inside").write_text("precious\n")
        return Target(kind, str(path), lambda: _same(path / "inside", "precious\n"))
    if kind == "link-file":
        target = folder / f"{name}.target"
        target.write_text("precious\n")
        os.symlink(target, path)
        return Target(kind, str(path), lambda: _link(path, str(target), "precious\n"))
    if kind == "link-dangling":
        target = folder / f"{name}.nowhere"
        os.symlink(target, path)
        return Target(kind, str(path), lambda: _link(path, str(target), None))
    if kind == "regular":
        path.write_text("precious\n")
        os.chmod(path, 0o640)
        return Target(kind, str(path), lambda: _same(path, "precious\n", 0o640))
    if kind == "null-link":  # a link to /dev/null: a regression replaces the link only
        os.symlink(os.devnull, path)
        return Target(kind, str(path), lambda: _link(path, os.devnull, ""))
    assert kind == "device"
    dev = _null_device(folder)
    return Target(kind, dev, lambda: _is(Path(dev), stat.S_ISCHR))


def _is(path: Path, test: Callable[[int], bool]) -> None:
    assert test(os.lstat(path).st_mode), path


def _same(path: Path, text: str, mode: int | None = None) -> None:
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and path.read_text() == text, path
    if mode is not None:
        assert stat.S_IMODE(st.st_mode) == mode


def _link(path: Path, target: str, text: str | None) -> None:
    assert os.path.islink(path) and os.readlink(path) == target, path
    if text is None:
        assert not os.path.lexists(target)
    else:
        assert Path(target).read_text() == text


@pytest.fixture(autouse=True)
def _null_stays() -> Iterator[None]:
    """Whatever happens, /dev/null is still the null device afterwards."""
    yield
    assert stat.S_ISCHR(os.lstat(os.devnull).st_mode), "/dev/null was replaced"


class FifoReader:
    """Reads a FIFO in a thread, so that a command writing through it does not block."""

    def __init__(self, path: str) -> None:
        self.data = b""
        self._thread = threading.Thread(target=self._read, args=(path,), daemon=True)
        self._thread.start()

    def _read(self, path: str) -> None:
        with open(path, "rb") as f:
            self.data = f.read()

    def result(self) -> bytes:
        self._thread.join(60)
        assert not self._thread.is_alive()
        return self.data


# -- a node with a chain to export, audit and recover from -------------------------------


@dataclass
class Lab:
    root: Path
    a: str  # the signing node that starts recoveries
    c: str  # a second signing node, to co-sign
    kb: str  # a key a added, to be revoked
    bundle: str  # a's export: an audit source
    disabled: str  # a node whose export carries the disablement secret


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    root = tmp_path_factory.mktemp("lab")
    a, c, d = (str(root / n) for n in ("a", "c", "d"))
    ka = run("lock", "--state-dir", a, "key").stdout.strip()
    kc = run("lock", "--state-dir", c, "key").stdout.strip()
    run("lock", "--state-dir", a, "init", "--confirm", ka, kc)
    kb = run("keygen", str(root / "b.key")).stdout.strip()
    run("lock", "--state-dir", a, "add", kb)
    bundle = str(root / "a.json")
    run("lock", "--state-dir", a, "export", bundle)
    run("lock", "--state-dir", c, "import", bundle)
    kd = run("lock", "--state-dir", d, "key").stdout.strip()
    out = run("lock", "--state-dir", d, "init", "--gen-disablements", "1", "--confirm", kd).stdout
    (secret,) = re.findall(r"disablement-secret:[0-9A-F]{64}", out)
    run("lock", "--state-dir", d, "disable", "-", stdin=secret + "\n")
    return Lab(root, a, c, kb, bundle, d)


def _revoke(lab: Lab, out: str, *extra: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return run("lock", "--state-dir", lab.a, "revoke-keys", lab.kb, "--out", out, *extra, ok=ok)


# -- lock export -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dir", "link-file", "link-dangling", "regular"])
def test_export_refuses_what_it_must_not_replace(lab: Lab, tmp_path: Path, kind: str) -> None:
    t = place(kind, tmp_path)
    proc = run("lock", "--state-dir", lab.a, "export", t.path, ok=False)
    if kind == "dir":  # click's own check, before the command runs
        assert proc.returncode == 2 and "is a directory" in proc.stderr
    else:
        refused(proc, t.path, WORDS[kind])
    t.intact()


def test_export_replaces_a_file_only_with_force(lab: Lab, tmp_path: Path) -> None:
    t = place("regular", tmp_path)
    msg = refused(run("lock", "--state-dir", lab.a, "export", t.path, ok=False), t.path)
    assert "a file is already there; pass --force to replace it" in msg
    t.intact()
    run("lock", "--state-dir", lab.a, "export", t.path, "--force")
    assert json.loads(Path(t.path).read_text())["aums"]
    assert stat.S_IMODE(os.stat(t.path).st_mode) == 0o644


def test_export_writes_through_a_fifo_and_a_link_to_dev_null(lab: Lab, tmp_path: Path) -> None:
    fifo = place("fifo", tmp_path)
    reader = FifoReader(fifo.path)
    proc = run("lock", "--state-dir", lab.a, "export", fifo.path)
    assert json.loads(reader.result())["aums"]
    assert proc.stdout == "" and "Exported" in proc.stderr  # the message is not in the pipe
    fifo.intact()
    null = place("null-link", tmp_path, "null")
    run("lock", "--state-dir", lab.a, "export", null.path)
    null.intact()


def test_export_to_dev_null_itself_leaves_it_a_device(lab: Lab) -> None:
    if os.geteuid() == 0:
        pytest.skip("as root a regression could replace /dev/null; the link case covers it")
    run("lock", "--state-dir", lab.a, "export", os.devnull)


def test_export_to_dash_and_to_dev_stdout(lab: Lab, tmp_path: Path) -> None:
    proc = run("lock", "--state-dir", lab.a, "export", "-")
    assert json.loads(proc.stdout)["aums"] and "Exported" in proc.stderr
    if not os.path.exists("/dev/stdout"):
        return
    # /dev/stdout leads to a pipe here: written through.
    proc = run("lock", "--state-dir", lab.a, "export", "/dev/stdout")
    assert json.loads(proc.stdout)["aums"] and "Exported" in proc.stderr
    # ...and to a regular file when stdout is redirected: refused, the file untouched.
    out = tmp_path / "stdout.txt"
    out.write_text("precious\n")
    with open(out, "a") as f:
        proc2 = subprocess.run(
            [TKA, "lock", "--state-dir", lab.a, "export", "/dev/stdout"],
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    refused(proc2, "/dev/stdout", "a symbolic link to", "'-' for stdout")
    assert out.read_text() == "precious\n"


def test_export_with_the_disablement_secret_goes_to_a_file_or_dash_only(
    lab: Lab, tmp_path: Path
) -> None:
    for kind in ("fifo", "null-link", "link-file"):
        t = place(kind, tmp_path, kind)
        proc = run("lock", "--state-dir", lab.disabled, "export", t.path, ok=False)
        refused(proc, t.path, "a secret is written only to a regular file (0600)")
        t.intact()
    new = tmp_path / "new.json"
    run("lock", "--state-dir", lab.disabled, "export", str(new))
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o600
    assert "disablement_secret" in new.read_text() or "secret" in new.read_text()
    assert json.loads(run("lock", "--state-dir", lab.disabled, "export", "-").stdout)


def test_export_help_example_runs_as_written(lab: Lab, tmp_path: Path) -> None:
    example = "tka lock export node1.json --force"
    assert example in run("lock", "export", "--help").stdout
    env = {**os.environ, "TKA_STATE_DIR": lab.a}
    env.pop("TKA_CONTROL_URL", None)
    env["PATH"] = str(Path(TKA).parent) + os.pathsep + env.get("PATH", "")
    for _ in range(2):  # the second run replaces the first file
        proc = subprocess.run(
            example, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "node1.json").read_text())["aums"]


# -- lock revoke-keys --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["link-file", "link-dangling", "regular"])
def test_revoke_keys_out_refuses_before_signing(lab: Lab, tmp_path: Path, kind: str) -> None:
    t = place(kind, tmp_path)
    refused(_revoke(lab, t.path, ok=False), t.path, WORDS[kind])
    t.intact()
    # Refused before anything else: even without a node.
    proc = run(
        "lock",
        "--state-dir",
        str(tmp_path / "none"),
        "revoke-keys",
        lab.kb,
        "--out",
        t.path,
        ok=False,
    )
    refused(proc, t.path)


def test_revoke_keys_default_file_is_not_replaced(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "recovery.tka").write_text("co-signed already\n")
    proc = run("lock", "--state-dir", lab.a, "revoke-keys", lab.kb, ok=False, cwd=tmp_path)
    refused(proc, "recovery.tka", "--force")
    assert (tmp_path / "recovery.tka").read_text() == "co-signed already\n"
    run("lock", "--state-dir", lab.a, "revoke-keys", lab.kb, "--force", cwd=tmp_path)
    assert re.fullmatch(r"[0-9A-F]+\n", (tmp_path / "recovery.tka").read_text())


def test_revoke_keys_out_to_dash_fifo_and_new_file(lab: Lab, tmp_path: Path) -> None:
    proc = _revoke(lab, "-")
    assert re.fullmatch(r"[0-9A-F]+\n", proc.stdout), proc.stdout
    assert "Wrote the recovery AUM to -" in proc.stderr and "--cosign FILE" in proc.stderr
    fifo = place("fifo", tmp_path)
    reader = FifoReader(fifo.path)
    _revoke(lab, fifo.path)
    assert re.fullmatch(rb"[0-9A-F]+\n", reader.result())
    fifo.intact()
    new = tmp_path / "rec.tka"
    _revoke(lab, str(new))
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o644


@pytest.mark.parametrize("kind", ["fifo", "link-file", "device"])
def test_revoke_keys_cosign_updates_only_a_regular_file(
    lab: Lab, tmp_path: Path, kind: str
) -> None:
    t = place(kind, tmp_path)
    proc = run("lock", "--state-dir", lab.c, "revoke-keys", "--cosign", t.path, ok=False)
    refused(proc, t.path, WORDS[kind])
    t.intact()


def test_revoke_keys_cosign_in_place_and_through_dash(lab: Lab, tmp_path: Path) -> None:
    rec = tmp_path / "rec.tka"
    _revoke(lab, str(rec))
    started = rec.read_text()
    proc = run("lock", "--state-dir", lab.c, "revoke-keys", "--cosign", "-", stdin=started)
    assert re.fullmatch(r"[0-9A-F]+\n", proc.stdout) and proc.stdout != started
    assert "Co-signed -" in proc.stderr
    run("lock", "--state-dir", lab.c, "revoke-keys", "--cosign", str(rec))  # the point: in place
    assert rec.read_text() == proc.stdout


# -- audit --html and --pin --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dir", "link-file", "link-dangling"])
def test_audit_html_refuses_before_auditing(lab: Lab, tmp_path: Path, kind: str) -> None:
    t = place(kind, tmp_path)
    refused(run("audit", lab.bundle, "--html", t.path, ok=False), t.path, WORDS[kind])
    t.intact()


def test_audit_html_replaces_an_earlier_report_and_other_files_only_with_force(
    lab: Lab, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    run("audit", lab.bundle, "--html", str(page))
    first = page.read_text()
    assert first.startswith("<!DOCTYPE html>")
    run("audit", lab.bundle, "--html", str(page))  # the cron job of the README
    t = place("regular", tmp_path, "notes.html")
    refused(run("audit", lab.bundle, "--html", t.path, ok=False), t.path, "--force")
    t.intact()
    run("audit", lab.bundle, "--html", t.path, "--force")
    assert Path(t.path).read_text().startswith("<!DOCTYPE html>")


def test_audit_html_to_dash_a_fifo_and_a_link_to_dev_null(lab: Lab, tmp_path: Path) -> None:
    proc = run("audit", lab.bundle, "--html", "-")
    assert proc.stdout.startswith("<!DOCTYPE html>") and "</html>" in proc.stdout
    proc = run("audit", lab.bundle, "--html", "-", "--json", ok=False)
    assert proc.returncode == 2 and "stdout" in proc.stderr
    fifo = place("fifo", tmp_path)
    reader = FifoReader(fifo.path)
    run("audit", lab.bundle, "--html", fifo.path)
    assert reader.result().startswith(b"<!DOCTYPE html>")
    fifo.intact()
    null = place("null-link", tmp_path, "null")
    run("audit", lab.bundle, "--html", null.path)
    null.intact()


@pytest.mark.parametrize("kind", ["fifo", "dir", "link-file", "link-dangling", "device"])
def test_audit_pin_must_be_a_regular_file(lab: Lab, tmp_path: Path, kind: str) -> None:
    t = place(kind, tmp_path)
    refused(run("audit", lab.bundle, "--pin", t.path, ok=False), t.path, WORDS[kind])
    t.intact()


def test_audit_pin_dash_is_refused_and_a_linked_pin_may_be_read(lab: Lab, tmp_path: Path) -> None:
    proc = run("audit", lab.bundle, "--pin", "-", ok=False)
    assert proc.returncode == 2 and "--pin needs a file" in proc.stderr
    pin = tmp_path / "real.pin"
    run("audit", lab.bundle, "--pin", str(pin))
    before = pin.read_text()
    os.symlink(pin, tmp_path / "link.pin")
    run("audit", lab.bundle, "--pin", str(tmp_path / "link.pin"), "--no-update")
    run("audit", lab.bundle, "--pin", str(pin))  # a regular pin is moved forward in place
    assert os.path.islink(tmp_path / "link.pin") and pin.read_text().startswith(before[:20])


# -- keygen ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "link-file", "link-dangling", "device", "regular"])
def test_keygen_refuses_anything_already_there(tmp_path: Path, kind: str) -> None:
    t = place(kind, tmp_path)
    refused(run("keygen", t.path, ok=False), t.path, WORDS[kind])
    t.intact()


def test_keygen_force_dash_and_new_file(tmp_path: Path) -> None:
    t = place("regular", tmp_path)
    pub = run("keygen", t.path, "--force").stdout.strip()
    assert pub.startswith("tlpub:") and Path(t.path).read_text().startswith("nlpriv:")
    assert stat.S_IMODE(os.stat(t.path).st_mode) == 0o600
    proc = run("keygen", "-")
    assert proc.stdout.startswith("nlpriv:") and proc.stderr.startswith("tlpub:")
    new = tmp_path / "new.key"
    run("keygen", str(new))
    assert stat.S_IMODE(os.stat(new).st_mode) == 0o600


# -- control admin-token, register, remint-token -----------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "link-file", "link-dangling", "device", "regular"])
def test_admin_token_refuses_before_minting(tmp_path: Path, kind: str) -> None:
    t = place(kind, tmp_path)
    db = tmp_path / "control.db"
    proc = run("control", "admin-token", "--store", f"sqlite:///{db}", "--out", t.path, ok=False)
    refused(proc, t.path, WORDS[kind])
    t.intact()
    assert not db.exists()  # nothing minted: the store was not even opened


def test_admin_token_force_and_dash(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/control.db"
    t = place("regular", tmp_path)
    run("control", "admin-token", "--store", store, "--out", t.path, "--force")
    assert stat.S_IMODE(os.stat(t.path).st_mode) == 0o600 and len(Path(t.path).read_text()) > 20
    token = run("control", "admin-token", "--store", store, "--out", "-").stdout
    assert token.endswith("\n") and len(token.strip()) > 20


@pytest.mark.parametrize("command", ["register", "remint-token"])
@pytest.mark.parametrize("kind", ["fifo", "link-file", "link-dangling", "device", "regular"])
def test_credentials_out_is_refused_before_the_service_is_asked(
    tmp_path: Path, command: str, kind: str
) -> None:
    t = place(kind, tmp_path)
    token = tmp_path / "admin.token"
    token.write_text("not-a-token\n")
    env = {
        **os.environ,
        "TKA_CONTROL_URL": "http://127.0.0.1:9",
        "TKA_ADMIN_TOKEN_FILE": str(token),
    }
    arg = "nodekey:" + "ab" * 32 if command == "register" else "1"
    proc = run("control", command, "t", arg, "--out", t.path, ok=False, env=env)
    refused(proc, t.path, WORDS[kind])  # not "cannot reach": the service was not asked
    t.intact()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    pytest.importorskip("uvicorn")
    from test_cli_lifecycle import Control

    c = Control(tmp_path_factory.mktemp("control"))
    try:
        run("control", "create-tailnet", "t", env=c.env)
        yield c.env
    finally:
        c.close()


def test_register_and_remint_write_credentials_safely(
    service: dict[str, str], tmp_path: Path
) -> None:
    cred = tmp_path / "n1.json"
    nk = "nodekey:" + os.urandom(32).hex()
    run("control", "register", "t", nk, "--out", str(cred), env=service)
    doc = json.loads(cred.read_text())
    assert stat.S_IMODE(os.stat(cred).st_mode) == 0o600
    node_id = str(doc["NodeID"])
    # The node's old credentials are not replaced without --force, and the old
    # token keeps working: the path was refused before reminting.
    proc = run("control", "remint-token", "t", node_id, "--out", str(cred), ok=False, env=service)
    refused(proc, str(cred), "--force")
    assert json.loads(cred.read_text()) == doc
    run("control", "remint-token", "t", node_id, "--out", str(cred), "--force", env=service)
    assert json.loads(cred.read_text())["Token"] != doc["Token"]
    out = run("control", "remint-token", "t", node_id, "--out", "-", env=service).stdout
    assert json.loads(out)["NodeID"] == doc["NodeID"]
    nk2 = "nodekey:" + os.urandom(32).hex()
    out = run("control", "register", "t", nk2, "--out", "-", env=service).stdout
    assert json.loads(out)["NodeKey"] == nk2


# -- serve --port-file -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "link-file"])
def test_serve_port_file_is_never_renamed_over(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("uvicorn")
    t = place(kind, tmp_path)
    store = f"sqlite:///{tmp_path}/control.db"
    proc = run(
        "serve", "--store", store, "--listen", "127.0.0.1:0", "--port-file", t.path, ok=False
    )
    # Refused as a usage error, before the store is opened or a port bound.
    assert proc.returncode == 2 and "which tka never replaces" in proc.stderr, proc.stderr
    assert not (tmp_path / "control.db").exists()
    t.intact()


# -- the shared helpers ------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*ALL_KINDS, "null-link"])
def test_check_target_for_each_kind(tmp_path: Path, kind: str) -> None:
    from tka._fileutil import TargetRefused, check_target

    t = place(kind, tmp_path)
    streams = {"fifo", "null-link", "device"}
    if kind in streams:
        assert check_target(t.path, streams=True) == "stream"
    if kind == "regular":
        assert check_target(t.path, replace=True) == "replace"
    with pytest.raises(TargetRefused) as err:
        check_target(t.path)
    assert err.value.path == t.path and err.value.errno is not None
    assert check_target(str(tmp_path / "missing")) == "create"
    t.intact()


@pytest.mark.parametrize("kind", [*ALL_KINDS, "null-link"])
@pytest.mark.parametrize("replace", [False, True])
def test_atomic_write_never_renames_over_anything_but_a_file(
    tmp_path: Path, kind: str, replace: bool
) -> None:
    from tka._fileutil import TargetRefused, atomic_write

    t = place(kind, tmp_path)
    if kind == "regular" and replace:
        atomic_write(t.path, b"new\n", 0o600, replace=True)
        assert Path(t.path).read_text() == "new\n"
        assert stat.S_IMODE(os.stat(t.path).st_mode) == 0o600
        return
    with pytest.raises(TargetRefused):
        atomic_write(t.path, b"new\n", replace=replace)
    t.intact()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]


def test_a_file_that_appears_during_a_create_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tka._fileutil as fu

    path = tmp_path / "out"
    real_fsync = os.fsync

    def fsync_then_someone_writes(fd: int) -> None:
        real_fsync(fd)
        if not path.exists():
            os.symlink("/etc/hostname", path)  # appears between the check and the move

    monkeypatch.setattr(fu.os, "fsync", fsync_then_someone_writes)
    with pytest.raises(fu.TargetRefused) as err:
        fu.atomic_write(str(path), b"new\n", replace=False)
    assert err.value.kind == "symlink"
    assert os.readlink(path) == "/etc/hostname"
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_half_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tka._fileutil as fu

    t = place("regular", tmp_path)

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fu.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        fu.atomic_write(t.path, b"new\n", replace=True)
    t.intact()
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_write_through_opens_without_truncating(tmp_path: Path) -> None:
    """A regular file swapped in for a FIFO is opened, found out, and left whole."""
    from tka._fileutil import TargetRefused, write_through

    t = place("regular", tmp_path)
    with pytest.raises(TargetRefused):
        write_through(t.path, b"new\n")
    t.intact()


def test_secret_files_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    from tka_cli._common import write_output

    old = os.umask(0)
    try:
        write_output(str(tmp_path / "s"), b"secret\n", secret=True)
        write_output(str(tmp_path / "p"), b"public\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "p").st_mode) == 0o644


@pytest.mark.parametrize("kind", [*ALL_KINDS, "null-link"])
@pytest.mark.parametrize("secret", [False, True])
def test_write_output_for_each_kind(tmp_path: Path, kind: str, secret: bool) -> None:
    from tka_cli._common import Fail, write_output

    t = place(kind, tmp_path)
    reader = FifoReader(t.path) if kind == "fifo" and not secret else None
    if reader is not None or (kind in ("null-link", "device") and not secret):
        if kind == "device" and os.geteuid() == 0:
            pytest.skip("the device node of the test's folder may not be openable (nodev)")
        assert write_output(t.path, b"data\n", secret=secret) == "stream"
        if reader is not None:
            assert reader.result() == b"data\n"
    else:
        with pytest.raises(Fail) as err:
            write_output(t.path, b"data\n", secret=secret)
        assert err.value.code == 2 and t.path in str(err.value)
        if kind == "regular":
            assert write_output(t.path, b"data\n", secret=secret, force=True) == "replace"
            assert Path(t.path).read_text() == "data\n"
            return
    t.intact()
