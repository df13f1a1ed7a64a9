"""Conformance checks for the ``authkey`` kind: wrapped auth keys and ``SignByCredential``."""

from __future__ import annotations

from typing import Any

from tka.authkey import decode_wrapped_authkey
from tka.conformance._json import hx, nks_json
from tka.conformance._util import Context, expect, unhex
from tka.conformance.nks import genesis_state
from tka.errors import NotAuthorized, TKAError
from tka.sig import authorize_node_key, sign_by_credential

__all__ = ["check"]


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``authkey`` vector case."""
    got = decode_wrapped_authkey(case["input"])
    expect("auth_key", got.auth_key, case["auth_key"])
    expect("is_wrapped", got.is_wrapped, case["is_wrapped"])
    expect("sig", None if got.signature is None else nks_json(got.signature), case["sig"])
    expect("priv_hex", hx(got.private_key), case["priv_hex"])
    expect("logged something", bool(got.problems), bool(case["log"]))
    if not got.is_wrapped or "sign_ok" not in case:
        return
    assert got.signature is not None and got.private_key is not None
    node_key = unhex(case["node_key_hex"]) or b""
    try:
        signed = sign_by_credential(got.private_key, got.signature, node_key).to_bytes()
    except TKAError:
        expect("sign_ok", False, case["sign_ok"])
        return
    expect("sign_ok", True, case["sign_ok"])
    expect("signed_hex", signed.hex(), case["signed_hex"])
    state = genesis_state(case["genesis_hex"])
    try:
        authorize_node_key(state, node_key, signed)
        ok = True
    except NotAuthorized:
        ok = False
    expect("authorized", ok, case["authorized"])
