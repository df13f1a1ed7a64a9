"""Conformance checks for the ``lock_log_json`` kind: ``tailscale lock log --json`` text.

Each case is checked two ways:

* the audit verdict (:func:`tka.audit.audit_log`) must be the harness's
  ``valid`` / ``incomplete`` / ``invalid``, and for ``valid`` the head and
  the state at the head must match;
* an untampered case (one with a ``limit``) is Tailscale's own output for
  the AUMs it lists, so rendering those AUMs again with the same limit
  (:func:`tka.lockjson.render_log`) must give the text byte for byte. The
  AUMs are taken from the messages' ``Raw`` bytes; the listing stops at the
  limit or at the genesis, exactly as Tailscale's walk from its head does.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from tka.audit import audit_log
from tka.aum import AUM
from tka.conformance._json import state_json
from tka.conformance._util import Context, Mismatch, expect
from tka.errors import TKAError
from tka.lockjson import parse_log, render_log

__all__ = ["check"]


def _rerender(text: str, limit: int) -> str:
    try:
        log = parse_log(text)
        aums = [AUM.from_bytes(base64.urlsafe_b64decode(m.raw)) for m in log.messages or ()]
    except (TKAError, binascii.Error, ValueError) as exc:
        raise Mismatch(f"untampered log does not parse: {exc}") from None
    return render_log(aums, limit)


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``lock_log_json`` vector case."""
    del ctx  # no storage backend involved
    text = case["json_text"]
    report = audit_log(text)
    if report.verdict != case["verdict"]:
        raise Mismatch(
            f"verdict: got {report.verdict} {[r.text for r in report.reasons][:3]}, "
            f"want {case['verdict']} {case.get('reasons', [])[:3]}"
        )
    if case["verdict"] == "valid":
        expect("head_b32", report.head, case["head_b32"])
        expect("state", None if report.state is None else state_json(report.state), case["state"])
    limit = case.get("limit")
    if limit is not None:
        got = _rerender(text, int(limit))
        if got != text:
            # Name the first differing line: a byte diff of 50 KB is unreadable.
            got_lines, want_lines = got.split("\n"), text.split("\n")
            for n, (g, w) in enumerate(zip(got_lines, want_lines, strict=False)):
                if g != w:
                    raise Mismatch(f"re-rendered text differs at line {n + 1}: {g!r} != {w!r}")
            expect("re-rendered line count", len(got_lines), len(want_lines))
