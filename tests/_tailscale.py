"""Run the real ``tailscaled`` and ``tailscale``, built from Tailscale's modules, on loopback.

:func:`client_or_skip` builds both binaries once (``integrations/build.py
client``, cached outside the repository) and skips, saying why, only where
Go is absent. :class:`Tailscaled` runs one daemon the way Tailscale's own
integration tests run many on one machine: userspace networking, its own
state directory and socket, an ephemeral port, no log upload, no port
mapping. Every wait is a condition polled until a deadline.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from _oracle import integrations_build

__all__ = ["ClientBinaries", "Tailscaled", "client_or_skip", "wait_for"]

T = TypeVar("T")


class ClientBinaries:
    """Where the built ``tailscaled`` and ``tailscale`` are."""

    def __init__(self, folder: Path) -> None:
        self.tailscaled = folder / "tailscaled"
        self.tailscale = folder / "tailscale"


_built: ClientBinaries | None = None
_build_error: str | None = None
_build_lock = threading.Lock()


def client_or_skip() -> ClientBinaries:
    """The real client binaries, built on first use; skip only where Go is absent."""
    global _built, _build_error
    build = integrations_build()
    with _build_lock:
        if _built is None and _build_error is None:
            try:
                _built = ClientBinaries(build.build_client())
            except build.GoUnavailable as exc:
                _build_error = f"skip:{exc}"
            except build.BuildError as exc:
                _build_error = f"fail:building tailscaled/tailscale failed: {exc}"
    if _built is not None:
        return _built
    assert _build_error is not None
    kind, _, reason = _build_error.partition(":")
    if kind == "skip":
        pytest.skip(reason)
    pytest.fail(reason, pytrace=False)


def wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    """Poll *check* until it returns something other than None, or fail after *timeout* s."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    last: Exception | None = None
    while True:
        try:
            got = check()
        except Exception as exc:  # the condition may fail while things start
            got, last = None, exc
        if got is not None:
            return got
        if time.monotonic() >= deadline:
            extra = f" (last error: {last})" if last else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


# What Tailscale's own integration tests set for daemons sharing one machine:
# no log upload, no UPnP/NAT-PMP probing of a router, and no waiting for a
# "network up" signal the sandbox never gives.
_DAEMON_ENV = {
    "TS_NO_LOGS_NO_SUPPORT": "1",
    "TS_DISABLE_PORTMAPPER": "1",
    "TS_ASSUME_NETWORK_UP_FOR_TEST": "1",
    "TS_LOGS_DIR": "",
}


class Tailscaled:
    """One ``tailscaled`` in userspace-networking mode with its own state dir and socket."""

    def __init__(self, binaries: ClientBinaries, root: Path, name: str) -> None:
        self.binaries = binaries
        self.name = name
        self.root = root / name
        self.state_dir = self.root / "state"
        # A short path: unix socket paths are limited to ~108 bytes.
        self.socket = self.root / "ts.sock"
        self.log_path = self.root / "tailscaled.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.root.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 30.0) -> None:
        """Start the daemon and wait until its local API answers."""
        env = dict(os.environ, **_DAEMON_ENV, HOME=str(self.root))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed by stop()
        self._proc = subprocess.Popen(
            [
                str(self.binaries.tailscaled),
                "--tun=userspace-networking",
                f"--statedir={self.state_dir}",
                f"--socket={self.socket}",
                "--port=0",
                "--no-logs-no-support",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        wait_for(
            f"{self.name}'s tailscaled to answer",
            lambda: True if self._answers() else self._fail_if_exited(),
            timeout,
        )

    def _answers(self) -> bool:
        return self.socket.exists() and self.cli("version", check=False).returncode == 0

    def _fail_if_exited(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise AssertionError(
                f"{self.name}'s tailscaled exited with {self._proc.returncode}: "
                + self.log_path.read_text(errors="replace")[-2000:]
            )
        return None

    def cli(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``tailscale --socket=... ARGS`` against this daemon."""
        proc = subprocess.run(
            [str(self.binaries.tailscale), f"--socket={self.socket}", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ, **_DAEMON_ENV),
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"tailscale {' '.join(args)} on {self.name} exited {proc.returncode}: "
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        return proc

    def json(self, *args: str) -> Any:
        """Run a ``tailscale`` command that prints JSON and parse it."""
        return json.loads(self.cli(*args).stdout)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL after *timeout* s)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Tailscaled:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
