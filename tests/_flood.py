"""Test helpers: ``tka serve`` under a low descriptor limit, and connection floods.

Used by ``tests/test_server_flood.py`` (not shipped). :class:`LimitedServer`
runs a real ``tka serve`` (SQLite) on loopback with ``RLIMIT_NOFILE`` set in
the child before it starts (soft = hard, so raising the soft limit to the
hard one at start changes nothing and exhaustion is cheap to reach), its
stderr captured to a file. :class:`Flood` opens many TCP connections to it
from given ``127.0.0.x`` source addresses without waiting for any of them
(non-blocking ``connect``), optionally sending a partial request head, and
holds them until closed. :func:`honest_request` times one admin request from
another loopback address, connection set-up included.

Everything stays on ``127.0.0.0/8``, is bounded in count and time, and stops
by itself (a flood's sockets are closed when it leaves its ``with`` block).
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import resource
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

from _server_harness import ServerProcess, mint_admin

__all__ = ["Flood", "LimitedServer", "honest_request", "wait_for"]


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll *cond* until it holds or *timeout* seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)


class LimitedServer(ServerProcess):
    """``tka serve`` on SQLite with ``RLIMIT_NOFILE`` = *nofile* (soft = hard); an admin token."""

    def __init__(self, workdir: str, nofile: int, extra_args: Iterable[str] = ()) -> None:
        super().__init__(f"sqlite:///{workdir}/control.db", workdir, extra_args=tuple(extra_args))
        self.nofile = nofile
        self.admin_token = ""
        self.child_setup = self._limit

    def _limit(self) -> None:  # runs in the child, before exec
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def start(self, timeout: float = 30.0) -> LimitedServer:
        self.admin_token = mint_admin(self.store_url)
        super().start(timeout)
        return self

    def open_fds(self) -> int:
        """How many descriptors the server process holds now."""
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def log_bytes(self) -> bytes:
        with open(self.log_path, "rb") as f:
            return f.read()

    def log_size(self) -> int:
        return os.path.getsize(self.log_path)

    def log_records(self) -> list[dict[str, Any]]:
        """Every line of the log as JSON (raises if one is not)."""
        out = []
        for line in self.log_bytes().splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out


class Flood:
    """Up to *count* connections to 127.0.0.1:*port*, round-robin over *sources*.

    Connections are started non-blocking and never waited for, so the flood
    does not slow down when the server stops accepting; *payload* (e.g. a
    half request head) is sent on each once it is connected. At most *rate*
    attempts a second if given (as fast as possible otherwise). Stops after
    *count* attempts or *seconds*, whichever comes first.
    """

    def __init__(
        self,
        port: int,
        count: int,
        sources: list[str],
        *,
        payload: bytes = b"",
        seconds: float = 10.0,
        rate: float | None = None,
    ) -> None:
        self.rate = rate
        self.port = port
        self.count = count
        self.sources = sources
        self.payload = payload
        self.seconds = seconds
        self.socks: list[socket.socket] = []
        self.attempts = 0
        self.errors = 0

    def open(self) -> Flood:
        start = time.monotonic()
        deadline = start + self.seconds
        for i in range(self.count):
            now = time.monotonic()
            if now > deadline:
                break
            if self.rate is not None and i % 100 == 0:
                ahead = start + i / self.rate - now
                if ahead > 0:
                    time.sleep(ahead)  # pacing, not a wait for a condition
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.bind((self.sources[i % len(self.sources)], 0))
                rc = s.connect_ex(("127.0.0.1", self.port))
            except OSError:
                s.close()
                self.errors += 1
                continue
            self.attempts += 1
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                self.errors += 1
                continue
            self.socks.append(s)
        if self.payload:
            self.send_payload()
        return self

    def send_payload(self) -> None:
        """Send the payload on every connection that is connected by now."""
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.send(self.payload)

    def still_open(self) -> int:
        """How many of the flood's connections the server still holds open.

        A connection the server closed, or answered (it only answers a
        flood connection with a 503 before closing it), does not count.
        """
        n = 0
        for s in self.socks:
            try:
                s.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                n += 1  # nothing to read and not closed
            except OSError:
                pass
        return n

    def close(self) -> None:
        for s in self.socks:
            s.close()
        self.socks = []

    def __enter__(self) -> Flood:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def honest_request(
    port: int, token: str, source: str = "127.0.0.200", timeout: float = 30.0
) -> tuple[float, int]:
    """GET /admin/tailnets from *source*: (seconds from connect to full answer, status).

    A connection the server refused or that timed out gives status 0.
    """
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    try:
        conn.request("GET", "/admin/tailnets", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        status = resp.status
    except OSError:
        status = 0
    finally:
        conn.close()
    return time.monotonic() - t0, status
