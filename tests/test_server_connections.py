"""The connection guard, the forwarded address and the log budget, in-process.

Fast checks of the pieces ``tests/test_server_flood.py`` exercises end to
end: who is admitted, refused or evicted; which ``X-Forwarded-For`` entry a
request counts against; how many bytes the log handler lets through.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
from tka_server.connections import ConnectionGuard
from tka_server.fdlimit import connection_cap
from tka_server.forwarded import TrustedProxies
from tka_server.logs import BudgetHandler, JSONFormatter

from tka.errors import UsageError

# -- ConnectionGuard ------------------------------------------------------------------------------


def test_per_address_cap_refuses_and_release_frees() -> None:
    guard = ConnectionGuard(max_connections=10, per_address=2)
    a1, a2 = guard.admit("10.0.0.1"), guard.admit("10.0.0.1")
    assert a1 is not None and a2 is not None
    assert guard.admit("10.0.0.1") is None
    assert guard.admit("10.0.0.2") is not None
    guard.release(a1)
    guard.release(a1)  # idempotent
    assert guard.count("10.0.0.1") == 1
    assert guard.admit("10.0.0.1") is not None
    assert guard.take_stats()[1] == {"refused_per_address": 1}


def test_full_service_evicts_the_oldest_idle_connection() -> None:
    guard = ConnectionGuard(max_connections=3, per_address=10)
    closed: list[str] = []
    slots = []
    for name in ("a", "b", "c"):
        slot = guard.admit(f"10.0.0.{len(slots) + 1}")
        assert slot is not None
        slot.closer = lambda name=name: closed.append(name)
        slots.append(slot)
    guard.set_busy(slots[0])  # "a" is serving a request: not evictable
    guard.set_idle(slots[2])  # "c" idle again: now the newest
    assert guard.admit("10.0.0.9") is not None
    assert closed == ["b"]
    assert guard.open == 3
    # Only busy connections left but one: then none, and the next is refused.
    guard.set_busy(slots[2])
    assert guard.admit("10.0.0.8") is not None  # evicts the newcomer from 10.0.0.9
    for slot in list(guard._idle):
        guard.set_busy(slot)
    assert guard.admit("10.0.0.7") is None
    assert guard.take_stats()[1] == {"evicted": 2, "refused_full": 1}


def test_trusted_proxy_is_not_capped_by_its_own_address() -> None:
    trusted = TrustedProxies(["127.0.0.1"])
    guard = ConnectionGuard(max_connections=10, per_address=1, is_trusted=trusted.__contains__)
    assert all(guard.admit("127.0.0.1") is not None for _ in range(5))
    assert guard.acquire_forwarded("10.0.0.7")
    assert not guard.acquire_forwarded("10.0.0.7")
    guard.release_forwarded("10.0.0.7")
    assert guard.acquire_forwarded("10.0.0.7")


def test_an_ipv6_64_counts_as_one_address() -> None:
    guard = ConnectionGuard(max_connections=10, per_address=2)
    assert guard.admit("2001:db8:1:2::1") is not None
    assert guard.admit("2001:db8:1:2:ffff::9") is not None
    assert guard.admit("2001:db8:1:2::77") is None
    assert guard.admit("2001:db8:1:3::1") is not None
    assert guard.admit("::ffff:192.0.2.1") is not None
    assert guard.count("192.0.2.1") == 1


def test_connection_cap_leaves_spare_descriptors() -> None:
    assert connection_cap(1000, 1024, 128) == 896
    assert connection_cap(1000, 65536, 128) == 1000
    assert connection_cap(1000, 100, 128) == 1


# -- forwarded address ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("10.1.1.1", ["9.9.9.9"], "9.9.9.9"),
        ("10.1.1.1", ["6.6.6.6, 9.9.9.9"], "9.9.9.9"),  # left of it: the client's word
        ("10.1.1.1", ["9.9.9.9, 10.2.0.5"], "9.9.9.9"),  # a chain of trusted proxies
        ("10.1.1.1", ["6.6.6.6", "9.9.9.9:4711"], "9.9.9.9"),  # two headers, a port
        ("10.1.1.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.1.1.1", ["10.3.3.3, 10.4.4.4"], "10.3.3.3"),  # all trusted: the left-most
        ("10.1.1.1", [], "10.1.1.1"),
        ("192.0.2.1", ["9.9.9.9"], "192.0.2.1"),  # not a trusted peer: ignored
        ("::ffff:10.1.1.1", ["9.9.9.9"], "9.9.9.9"),  # IPv4-mapped
    ],
)
def test_right_most_untrusted_entry(peer: str, xff: list[str], expected: str) -> None:
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.client_address(peer, xff) == expected


def test_bad_trusted_proxy_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not an IP address"):
        TrustedProxies(["proxy.example"])
    assert not TrustedProxies()


# -- log budget -----------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _logger(handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(f"test.budget.{id(handler)}")
    log.propagate = False
    log.handlers = [handler]
    log.setLevel(logging.INFO)
    return log


def test_log_budget_holds_over_any_minute_and_summarizes() -> None:
    clock, out = _Clock(), io.StringIO()
    handler = BudgetHandler(out, bytes_per_minute=100_000, clock=clock)
    handler.setFormatter(JSONFormatter())
    log = _logger(handler)
    written = []
    # Three minutes of a flood of two kinds, 1,000 lines a second.
    for step in range(3 * 60 * 20):
        clock.now = step / 20
        for i in range(50):
            event = "flood_a" if i % 2 else "flood_b"
            log.info(event, extra={"fields": {"event": event, "n": i}})
        written.append(len(out.getvalue()))
    # Any 60 s window (1,200 steps) stays under the budget.
    worst = max(written[i + 1200] - written[i] for i in range(len(written) - 1200))
    assert worst <= 100_000, worst
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    summaries = [r for r in lines if r["event"] == "log_suppressed"]
    assert summaries and set(summaries[0]["lines"]) == {"flood_a", "flood_b"}
    # A third kind still gets through while the two flood: each may use half.
    log.warning("other", extra={"fields": {"event": "other"}})
    assert json.loads(out.getvalue().splitlines()[-1])["event"] == "other"


def test_exceptions_are_one_line_without_traceback() -> None:
    out = io.StringIO()
    handler = BudgetHandler(out)
    handler.setFormatter(JSONFormatter())
    log = _logger(handler)
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        log.exception("socket.accept() out of system resource")
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["exception"] == "OSError" and "Traceback" not in line
