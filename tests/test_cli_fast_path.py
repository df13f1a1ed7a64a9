"""``tka --version`` and the offline ``tka lock status`` answered before click loads.

The fast path (tka_cli.fast_path) must never change what a command prints
or how it exits, only how soon: every case below runs the installed console
script (which takes the fast path when it can) and the full click command
line on the same arguments, and compares stdout, stderr and exit code.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tka_cli.fast_path import answer

TKA = str(Path(sys.executable).with_name("tka"))
# The full command line, never the fast path: tka_cli.main.main() is what
# the console script falls back to.
FULL = [sys.executable, "-c", "from tka_cli.main import main; main()"]


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    return proc.returncode, proc.stdout, proc.stderr


def _same_both_ways(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    fast = _run([TKA, *args], env)
    full = _run([*FULL, *args], env)
    assert fast == full, (args, fast, full)
    assert "Traceback" not in fast[2]
    return fast


@pytest.fixture(scope="module")
def initialized(tmp_path_factory: pytest.TempPathFactory) -> str:
    node = str(tmp_path_factory.mktemp("fast") / "node")
    key = subprocess.run(
        [TKA, "lock", "--state-dir", node, "key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(
        [TKA, "lock", "--state-dir", node, "init", "--gen-disablements", "1", "--confirm", key],
        capture_output=True,
        check=True,
    )
    return node


def _copy(src: str, dst: Path) -> str:
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return str(dst)


def _status_forms(node: str) -> Iterator[list[str]]:
    yield ["lock", "--state-dir", node, "status"]
    yield ["--state-dir", node, "lock", "status"]
    yield ["lock", "status", f"--state-dir={node}"]
    yield ["lock", "--state-dir", "/nonexistent-elsewhere", "status", "--state-dir", node]


def test_initialized_node_every_form(initialized: str) -> None:
    for args in _status_forms(initialized):
        code, out, _ = _same_both_ways(args)
        assert code == 0
        assert out.startswith("Tailnet lock is ENABLED.\n")
        assert "Head: " in out and "(self)" in out


def test_state_dir_from_environment(initialized: str) -> None:
    env = dict(os.environ, TKA_STATE_DIR=initialized)
    code, out, _ = _same_both_ways(["lock", "status"], env)
    assert code == 0 and "ENABLED" in out


def _key_only(tmp: Path) -> str:
    node = str(tmp / "key-only")
    subprocess.run([TKA, "lock", "--state-dir", node, "key"], capture_output=True, check=True)
    return node


def _locally_disabled(tmp: Path, initialized: str) -> str:
    node = _copy(initialized, tmp / "off")
    subprocess.run(
        [TKA, "lock", "--state-dir", node, "local-disable"], capture_output=True, check=True
    )
    return node


def _damaged(tmp: Path, initialized: str) -> str:
    node = _copy(initialized, tmp / "damaged")
    for dirpath, _, files in os.walk(os.path.join(node, "tka")):
        for name in files:
            if len(name) == 52:
                Path(dirpath, name).write_bytes(b"\xff not an AUM")
    return node


def _odd_disable_record(tmp: Path, initialized: str) -> str:
    node = _copy(initialized, tmp / "odd")
    # Terminal escapes and non-ASCII text in a record this node reads back:
    # the output must still be what the full command prints.
    Path(node, "disabled.json").write_text(json.dumps({"how": "l\u00f6cal\u001b[31m"}))
    return node


def _control_saved(tmp: Path, initialized: str) -> str:
    node = _copy(initialized, tmp / "control")
    # A control service nobody listens on: the full command warns that the
    # sync failed; the fast path must leave it to the full command.
    Path(node, "control.json").write_text(json.dumps({"url": "http://127.0.0.1:9"}))
    return node


def _empty(tmp: Path) -> str:
    (tmp / "empty").mkdir()
    return str(tmp / "empty")


def _not_a_directory(tmp: Path) -> str:
    path = tmp / "a-file"
    path.write_text("x")
    return str(path)


CASES: dict[str, Callable[[Path, str], str]] = {
    "key only": lambda tmp, init: _key_only(tmp),
    "empty directory": lambda tmp, init: _empty(tmp),
    "locally disabled": _locally_disabled,
    "damaged chain": _damaged,
    "control saved": _control_saved,
    "odd disable record": _odd_disable_record,
    "missing directory": lambda tmp, init: str(tmp / "missing"),
    "a file": lambda tmp, init: _not_a_directory(tmp),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_output_and_exit_code(case: str, initialized: str, tmp_path: Path) -> None:
    node = CASES[case](tmp_path, initialized)
    code, out, err = _same_both_ways(["lock", "--state-dir", node, "status"])
    expected = {
        "key only": 0,
        "empty directory": 0,
        "locally disabled": 0,
        "damaged chain": 3,
        "control saved": 0,
        "odd disable record": 0,
        "missing directory": 3,
        "a file": 2,
    }[case]
    assert code == expected, (out, err)


def test_control_url_from_environment(initialized: str) -> None:
    env = dict(os.environ, TKA_CONTROL_URL="http://127.0.0.1:9")
    _same_both_ways(["lock", "--state-dir", initialized, "status"], env)


def test_busy_state_directory_waits_as_the_full_command(initialized: str) -> None:
    """Another process holding the directory: status waits for it instead of failing."""
    fd = os.open(os.path.join(initialized, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    timer = threading.Timer(1.0, lambda: os.close(fd))
    timer.start()
    try:
        start = time.monotonic()
        code, out, err = _run([TKA, "lock", "--state-dir", initialized, "status"])
        waited = time.monotonic() - start
    finally:
        timer.join()
    assert code == 0, err
    assert "ENABLED" in out
    assert waited >= 0.9


def test_version() -> None:
    code, out, _ = _same_both_ways(["--version"])
    assert code == 0 and out.startswith("tka ")


def test_fast_path_does_not_load_click(initialized: str) -> None:
    probe = (
        "import sys, io, contextlib\n"
        "from tka_cli.fast_path import answer\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = answer(['lock', '--state-dir', {initialized!r}, 'status'])\n"
        "print(code, sorted(m for m in ('click', 'nacl', 'cryptography') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "0 []"


@pytest.mark.parametrize(
    "args",
    [
        ["lock", "status", "--json", "--state-dir", "NODE"],
        ["lock", "status", "--help", "--state-dir", "NODE"],
        ["lock", "status", "extra", "--state-dir", "NODE"],
        ["lock", "status", "--state-dir"],
        ["lock", "status", "--state-dir="],
        ["lock", "status", "--debug", "--state-dir", "NODE"],
        ["lock", "status", "--control", "http://127.0.0.1:9", "--state-dir", "NODE"],
        ["lock", "status", "--lock-timeout", "1", "--state-dir", "NODE"],
        ["lock", "status", "--state-dir", "NODE", "--", "x"],
        ["lock", "log", "--state-dir", "NODE"],
        ["status", "--state-dir", "NODE"],
        ["--version", "--version"],
        [],
    ],
)
def test_everything_else_goes_to_click(args: list[str], initialized: str) -> None:
    argv = [initialized if a == "NODE" else a for a in args]
    assert answer(argv) is None
