"""Conformance checks for the ``aum`` kind: decoding, validation, canonical form, hashes."""

from __future__ import annotations

from typing import Any

from tka.aum import AUM
from tka.conformance._json import aum_json, b32, hx
from tka.conformance._util import Context, expect, unhex
from tka.errors import TKAError, ValidationError

__all__ = ["check"]


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``aum`` vector case."""
    data = unhex(case["input_hex"]) or b""
    try:
        aum = AUM.from_bytes(data)
    except TKAError as exc:
        expect("decode_ok", False, case["decode_ok"])
        del exc
        return
    expect("decode_ok", True, case["decode_ok"])
    expect("aum", aum_json(aum), case["aum"])
    try:
        aum.static_validate()
        valid = True
    except ValidationError:
        valid = False
    expect("static_validate_ok", valid, case["static_validate_ok"])
    expect("reserialized_hex", aum.to_bytes().hex(), case["reserialized_hex"])
    expect("reserialized_equals_input", aum.to_bytes() == data, case["reserialized_equals_input"])
    expect("hash_b32", b32(aum.hash), case["hash_b32"])
    expect("hash_hex", aum.hash.hex(), case["hash_hex"])
    expect("sighash_hex", aum.sig_hash.hex(), case["sighash_hex"])
    expect("parent_hex", hx(aum.parent), case["parent_hex"])
