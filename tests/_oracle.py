"""A client for ``tka-oracle``: Tailscale's own Go ``tka`` as a JSON-lines program.

The oracle lives beside the project, not in it (``../shared/oracle/tka-oracle``
from the checkout, or wherever ``$TKA_ORACLE`` points). Tests that need it call
:func:`oracle_or_skip`, which starts one process per test session and skips
with a clear reason where the binary is absent (a user's clone). See
``CONFORMANCE.md`` for how the differential tests use it.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

__all__ = ["Oracle", "OracleUnavailable", "find_oracle", "oracle_or_skip", "start_oracle"]

_DEFAULT = Path(__file__).resolve().parent.parent.parent / "shared" / "oracle" / "tka-oracle"


class OracleUnavailable(Exception):
    """The oracle binary is missing or does not start; the message says why."""


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
    """The oracle's path, made executable if needed; raises :class:`OracleUnavailable`."""
    configured = os.environ.get("TKA_ORACLE")
    path = Path(configured) if configured else _DEFAULT
    if not path.is_file():
        where = "$TKA_ORACLE" if configured else "../shared/oracle/tka-oracle"
        raise OracleUnavailable(
            f"tka-oracle not found at {path} ({where}); these differential tests need "
            "Tailscale's tka as a program (set TKA_ORACLE to its path to run them)"
        )
    if os.access(path, os.X_OK):
        return str(path)
    # ../shared is read-only in CI: run an executable copy instead.
    tmp = tempfile.mkdtemp(prefix="tka-oracle-")
    atexit.register(shutil.rmtree, tmp, True)
    copy = Path(tmp) / "tka-oracle"
    shutil.copyfile(path, copy)
    copy.chmod(copy.stat().st_mode | stat.S_IXUSR)
    return str(copy)


_started: Oracle | None = None
_start_lock = threading.Lock()


def start_oracle() -> Oracle:
    """The session's oracle process, started on first use and stopped at exit."""
    global _started
    with _start_lock:
        if _started is None:
            oracle = Oracle(find_oracle())
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
    """The session's oracle, or a pytest skip saying why it is unavailable."""
    try:
        return start_oracle()
    except OracleUnavailable as exc:
        pytest.skip(str(exc))
    except OSError as exc:
        pytest.skip(f"tka-oracle could not be started: {exc}")
