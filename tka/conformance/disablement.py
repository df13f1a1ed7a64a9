"""Conformance checks for the ``disablement`` kind: the KDF and disablement checks."""

from __future__ import annotations

from typing import Any

from tka.aum import AUM
from tka.authority import Authority
from tka.conformance._util import Context, Mismatch, expect, unhex
from tka.disablement import disablement_kdf
from tka.storage.memory import MemoryStore

__all__ = ["check"]


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``disablement`` vector case."""
    kind = case.get("case_type")
    secret = unhex(case["secret_hex"]) or b""
    if kind == "kdf":
        expect("kdf_hex", disablement_kdf(secret).hex(), case["kdf_hex"])
    elif kind == "valid_disablement":
        genesis = AUM.from_bytes(unhex(case["genesis_hex"]) or b"")
        authority = Authority.bootstrap(MemoryStore(), genesis)
        values = [v.hex() for v in authority.state.disablement_values or ()]
        expect("disablement values", values, case["disablement_values_hex"])
        expect("valid", authority.valid_disablement(secret), case["valid"])
    else:
        raise Mismatch(f"unknown disablement case_type {kind!r}")
