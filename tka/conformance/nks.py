"""Conformance checks for the ``nks`` kind: node-key signature decoding and authorization."""

from __future__ import annotations

from typing import Any

from tka.aum import AUM
from tka.conformance._json import hx, nks_json
from tka.conformance._util import Context, expect, unhex
from tka.errors import NotAuthorized, TKAError
from tka.sig import NodeKeySignature, authorize_node_key
from tka.state import State

__all__ = ["check", "genesis_state"]


def genesis_state(genesis_hex: str) -> State:
    """The state an authority bootstrapped from *genesis_hex* starts in."""
    genesis = AUM.from_bytes(unhex(genesis_hex) or b"")
    return State.from_checkpoint(genesis)


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``nks`` vector case."""
    data = unhex(case["sig_hex"]) or b""
    node_key = unhex(case["node_key_hex"]) or b""
    try:
        sig = NodeKeySignature.from_bytes(data)
    except TKAError:
        expect("decode_ok", False, case["decode_ok"])
    else:
        expect("decode_ok", True, case["decode_ok"])
        expect("sig", nks_json(sig), case["sig"])
        expect("reserialized_hex", sig.to_bytes().hex(), case["reserialized_hex"])
        expect("sighash_hex", sig.sig_hash.hex(), case["sighash_hex"])
        try:
            kid: bytes | None = sig.authorizing_key_id()
        except NotAuthorized:
            kid = None
        expect(
            "unverified_authorizing_key_id_hex", hx(kid), case["unverified_authorizing_key_id_hex"]
        )
        expect(
            "unverified_wrapping_public_hex",
            hx(sig.wrapping_public()),
            case["unverified_wrapping_public_hex"],
        )
    state = genesis_state(case["authority_genesis_hex"])
    try:
        details = authorize_node_key(state, node_key, data)
    except NotAuthorized:
        expect("authorized", False, case["authorized"])
        return
    expect("authorized", True, case["authorized"])
    got = None
    if details is not None:
        got = {
            "prev_node_keys_hex": [k.hex() for k in details.prev_node_keys],
            "initial_sig": None if details.initial_sig is None else nks_json(details.initial_sig),
        }
    expect("rotation_details", got, case["rotation_details"])
