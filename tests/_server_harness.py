"""Test harness: a real ``tka serve`` process on loopback, and PostgreSQL to run it on.

Used by tka's server tests (not shipped in the package): :class:`ServerProcess`
starts ``tka serve`` in a subprocess on ``127.0.0.1`` with a free port, waits
for ``/healthz`` and can stop it gracefully (SIGTERM), kill it (SIGKILL) and
start it again on the same store. :class:`PostgresProvider` hands out fresh
PostgreSQL databases: from ``$TKA_TEST_POSTGRES_URL`` (a server the caller
runs, e.g. CI), else from a throw-away cluster it starts with the
``initdb``/``pg_ctl`` of a local PostgreSQL installation.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

__all__ = ["PostgresProvider", "ServerProcess", "find_pg_bin", "tka_command"]


def tka_command() -> list[str]:
    """How to run the ``tka`` CLI of the running interpreter."""
    return [sys.executable, "-m", "tka_cli.main"]


class ServerProcess:
    """``tka serve`` on ``127.0.0.1:<free port>`` with *store_url*, logging to *log_path*."""

    def __init__(
        self,
        store_url: str,
        workdir: str,
        *,
        graceful_timeout: float = 10.0,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.store_url = store_url
        self.extra_args = extra_args
        self.workdir = workdir
        self.graceful_timeout = graceful_timeout
        self.log_path = os.path.join(workdir, "server.log")
        self.port_file = os.path.join(workdir, "server.port")
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.starts = 0
        #: Runs in the child before exec (e.g. to lower a resource limit).
        self.child_setup: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        """The service's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start the server and wait until ``/healthz`` answers 200.

        The first start picks a free port; a restart listens on the same one,
        so clients keep their URL.
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port_file)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [
                    *tka_command(),
                    "serve",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--store",
                    self.store_url,
                    "--port-file",
                    self.port_file,
                    "--graceful-timeout",
                    str(self.graceful_timeout),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                preexec_fn=self.child_setup,
            )
        finally:
            log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tka serve exited with {self.proc.returncode}: {self.tail()}")
            try:
                with open(self.port_file, encoding="ascii") as f:
                    self.port = int(f.read().strip())
                if self.get("/healthz")[0] == 200:
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"tka serve did not become healthy: {self.tail()}")

    @property
    def pid(self) -> int:
        """The server process's ID (it must be running)."""
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """CPU time (user + system, every thread) the server used so far, from /proc.

        The kernel counts it in clock ticks (usually 10 ms each).
        """
        with open(f"/proc/{self.pid}/stat", encoding="ascii") as f:
            # Fields after the command name (which may hold spaces) in parentheses.
            rest = f.read().rsplit(")", 1)[1].split()
        ticks = int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def get(self, path: str) -> tuple[int, bytes]:
        """A plain GET (for health checks)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown) and wait; returns the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown step at all."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def tail(self, n: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def log_records(self) -> list[dict[str, Any]]:
        """The server's structured log lines."""
        out = []
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.stop()


def mint_admin(store_url: str) -> str:
    """An admin token minted directly in the store at *store_url* (as 'tka control admin-token')."""
    from tka.control.service import ControlService
    from tka.control.store import open_store

    store = open_store(store_url)
    try:
        return ControlService(store).mint_admin_token("test")
    finally:
        store.close()


def find_pg_bin() -> str | None:
    """The newest ``/usr/lib/postgresql/*/bin`` that has ``initdb`` and ``pg_ctl``."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) for x in p.split("/")[-2].split(".") if x.isdigit()],
    )
    for d in reversed(candidates):
        if os.access(os.path.join(d, "initdb"), os.X_OK) and os.access(
            os.path.join(d, "pg_ctl"), os.X_OK
        ):
            return d
    for name in ("initdb", "pg_ctl"):
        if shutil.which(name) is None:
            return None
    return os.path.dirname(shutil.which("initdb") or "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresProvider:
    """Fresh PostgreSQL databases for tests.

    :attr:`unavailable` says why there are none (then tests skip with that
    reason); otherwise :meth:`new_database` returns a URL to an empty
    database and :meth:`close` drops them all (and stops a cluster this
    provider started).
    """

    def __init__(self) -> None:
        self.admin_url: str | None = os.environ.get("TKA_TEST_POSTGRES_URL") or None
        self.unavailable: str | None = None
        self._cluster: str | None = None
        self._pg_bin: str | None = None
        self._databases: list[str] = []
        try:
            import psycopg  # noqa: F401
        except ImportError:
            self.unavailable = "psycopg is not installed (pip install 'tka[server]')"
            return
        if self.admin_url is None:
            self._start_cluster()

    def _run_pg(self, args: list[str]) -> None:
        cmd = args
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root.
            cmd = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _start_cluster(self) -> None:
        pg_bin = find_pg_bin()
        if pg_bin is None:
            self.unavailable = (
                "no PostgreSQL: set TKA_TEST_POSTGRES_URL or install PostgreSQL "
                "(initdb and pg_ctl under /usr/lib/postgresql/*/bin)"
            )
            return
        base = tempfile.mkdtemp(prefix="tka-test-pg-")
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        port = _free_port()
        data = os.path.join(base, "data")
        try:
            self._run_pg([f"{pg_bin}/initdb", "-D", data, "-A", "trust", "-U", "postgres"])
            self._run_pg(
                [
                    f"{pg_bin}/pg_ctl",
                    "-D",
                    data,
                    "-l",
                    os.path.join(base, "server.log"),
                    "-w",
                    "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {base}",
                    "start",
                ]
            )
        except (subprocess.CalledProcessError, OSError) as exc:
            err = getattr(exc, "stderr", b"") or b""
            self.unavailable = f"could not start PostgreSQL: {exc} {err.decode(errors='replace')}"
            return
        self._cluster, self._pg_bin = data, pg_bin
        self.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def new_database(self) -> str:
        """Create an empty database; its URL."""
        import psycopg

        assert self.admin_url is not None
        name = "tka_test_" + secrets.token_hex(6)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._databases.append(name)
        parts = urllib.parse.urlsplit(self.admin_url)
        return urllib.parse.urlunsplit(parts._replace(path="/" + name))

    def close(self) -> None:
        """Drop the databases made here; stop the cluster started here."""
        if self.admin_url is not None and self._databases:
            import psycopg

            with (
                contextlib.suppress(Exception),
                psycopg.connect(self.admin_url, autocommit=True) as conn,
            ):
                for name in self._databases:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._databases = []
        if self._cluster is not None and self._pg_bin is not None:
            with contextlib.suppress(Exception):
                self._run_pg([f"{self._pg_bin}/pg_ctl", "-D", self._cluster, "-m", "fast", "stop"])
            shutil.rmtree(os.path.dirname(self._cluster), ignore_errors=True)
            self._cluster = None
