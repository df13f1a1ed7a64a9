"""A client for ``tka-oracle``: Tailscale's own Go ``tka`` as a JSON-lines program.

The oracle is built from source by the project (``integrations/tailscale``,
through ``integrations/build.py``) on first use, into a cache outside the
repository, against the ``tailscale.com`` version ``go.mod`` pins or the one
``$TKA_TAILSCALE_VERSION`` names. ``$TKA_ORACLE`` points the tests at another
binary instead. Tests that need it call :func:`oracle_or_skip`, which starts
one process per test session and skips, with the reason, only where Go is
absent; a build that fails is an error, not a skip. See ``CONFORMANCE.md``.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

__all__ = [
    "Oracle",
    "OracleBuildFailed",
    "OracleUnavailable",
    "find_oracle",
    "integrations_build",
    "oracle_or_skip",
    "start_oracle",
]

_BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "integrations" / "build.py"


class OracleUnavailable(Exception):
    """The oracle binary is missing or does not start; the message says why."""


class OracleBuildFailed(Exception):
    """Go is here but the oracle did not build: a failure to report, never a skip."""


def integrations_build() -> ModuleType:
    """``integrations/build.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("tka_integrations_build", _BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Oracle:
    """One running ``tka-oracle`` process; :meth:`ask` is safe to call from any thread.

    Requests and responses are matched in order (the protocol answers one
    line per request line); each request carries an ``id`` and the answer
    must echo it, so a desynchronised stream is caught at once.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._next_id = 0
        self.requests = 0
        self._proc = subprocess.Popen(
            [path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )

    def ask(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its answer (``oracle_error`` included)."""
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            line = json.dumps({"op": op, "id": rid, **fields}, separators=(",", ":"))
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
                answer = proc.stdout.readline()
            except (BrokenPipeError, OSError) as exc:
                raise OracleUnavailable(f"tka-oracle died: {exc}") from exc
            if not answer:
                raise OracleUnavailable(f"tka-oracle exited (code {proc.poll()}) on {op}")
            self.requests += 1
        out: dict[str, Any] = json.loads(answer)
        if out.get("id") not in (rid, None):
            raise OracleUnavailable(f"tka-oracle answered id {out.get('id')}, asked {rid}")
        out.pop("id", None)
        return out

    def close(self) -> None:
        """Stop the process (closing its input ends it)."""
        proc = self._proc
        if proc.poll() is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def find_oracle() -> str:
    """The oracle's path: ``$TKA_ORACLE``, else built from source (made executable if needed).

    Raises :class:`OracleUnavailable` when ``$TKA_ORACLE`` names no file or Go
    is absent, and :class:`OracleBuildFailed` when the build itself fails.
    """
    configured = os.environ.get("TKA_ORACLE")
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise OracleUnavailable(
                f"tka-oracle not found at {path} ($TKA_ORACLE); unset TKA_ORACLE to build "
                "Tailscale's tka from source instead"
            )
    else:
        build = integrations_build()
        try:
            path = build.build_oracle()
        except build.GoUnavailable as exc:
            raise OracleUnavailable(f"tka-oracle cannot be built: {exc}") from exc
        except build.BuildError as exc:
            raise OracleBuildFailed(f"building tka-oracle from source failed: {exc}") from exc
    if os.access(path, os.X_OK):
        return str(path)
    # A binary handed over without its exec bit (a read-only copy, say): run
    # an executable copy instead.
    tmp = tempfile.mkdtemp(prefix="tka-oracle-")
    atexit.register(shutil.rmtree, tmp, True)
    copy = Path(tmp) / "tka-oracle"
    shutil.copyfile(path, copy)
    copy.chmod(copy.stat().st_mode | stat.S_IXUSR)
    return str(copy)


_started: Oracle | None = None
# Why the oracle could not be had, kept so that a failed build is tried once
# per test session rather than once per test.
_unavailable: Exception | None = None
_start_lock = threading.Lock()


def start_oracle() -> Oracle:
    """The session's oracle process, started on first use and stopped at exit."""
    global _started, _unavailable
    with _start_lock:
        if _unavailable is not None:
            raise _unavailable
        if _started is None:
            try:
                path = find_oracle()
            except (OracleUnavailable, OracleBuildFailed) as exc:
                _unavailable = exc
                raise
            oracle = Oracle(path)
            try:
                pong = oracle.ask("ping")
            except OracleUnavailable:
                oracle.close()
                raise
            if pong.get("pong") is not True:
                oracle.close()
                raise OracleUnavailable(f"tka-oracle did not answer ping: {pong}")
            atexit.register(oracle.close)
            _started = oracle
        return _started


def oracle_or_skip() -> Oracle:
    """The session's oracle, or a pytest skip saying why it is unavailable (Go absent).

    A build that fails, or a binary that does not start, fails the test: only
    a missing toolchain (or a ``$TKA_ORACLE`` naming no file) is a reason to skip.
    """
    try:
        return start_oracle()
    except OracleUnavailable as exc:
        pytest.skip(str(exc))
    except OracleBuildFailed as exc:
        pytest.fail(str(exc), pytrace=False)
    except OSError as exc:
        pytest.fail(f"tka-oracle could not be started: {exc}", pytrace=False)
