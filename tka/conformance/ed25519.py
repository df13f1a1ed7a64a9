"""Conformance checks for the ``ed25519`` vector kind.

Each case gives a public key, a message and a signature, plus the verdicts of
ed25519consensus (``zip215_valid``) and Go's crypto/ed25519 (``go_stdlib_valid``).
Both verdicts must match; the informational fields are not checked.
"""

from __future__ import annotations

from typing import Any

from tka import ed25519
from tka.conformance._util import Context, Mismatch, expect, unhex

__all__ = ["check"]


def _field(case: dict[str, Any], name: str) -> bytes:
    value = unhex(case.get(name))
    if value is None:
        raise Mismatch(f"vector field {name} is missing")
    return value


def check(case: dict[str, Any], ctx: Context) -> None:
    """Raise :class:`Mismatch` when either verification verdict differs from the vector."""
    del ctx  # no run-wide options apply to pure signature checks
    public = _field(case, "public_hex")
    message = _field(case, "message_hex")
    signature = _field(case, "signature_hex")
    expect("zip215_valid", ed25519.verify_zip215(public, message, signature), case["zip215_valid"])
    expect(
        "go_stdlib_valid",
        ed25519.verify_go_stdlib(public, message, signature),
        case["go_stdlib_valid"],
    )
