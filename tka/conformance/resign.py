"""Conformance checks for the ``resign`` kind: ``ResignNKS``."""

from __future__ import annotations

from typing import Any

from tka.conformance._json import nks_json
from tka.conformance._util import Context, expect, unhex
from tka.conformance.nks import genesis_state
from tka.errors import DecodeError, NotAuthorized, TKAError
from tka.nlkeys import NLPrivate
from tka.sig import NodeKeySignature, authorize_node_key, resign_nks

__all__ = ["check"]


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``resign`` vector case."""
    priv = NLPrivate.from_text(case["priv_text"])
    expect("priv seed", priv.seed.hex(), case["priv_seed_hex"])
    node_key = unhex(case["node_key_hex"]) or b""
    old = unhex(case["old_sig_hex"]) or b""
    try:
        new = resign_nks(priv.raw, node_key, old)
    except TKAError:
        expect("ok", False, case["ok"])
        return
    expect("ok", True, case["ok"])
    expect("new_sig_hex", new.hex(), case["new_sig_hex"])
    expect("returned_old_verbatim", new == old, case["returned_old_verbatim"])
    # Go can produce a signature it cannot decode itself (a credential under
    # 15 rotations, re-signed, nests 17 levels deep); then there is no
    # decoded form to compare, and authorization below must fail to decode.
    try:
        decoded: dict[str, Any] | None = nks_json(NodeKeySignature.from_bytes(new))
    except DecodeError:
        decoded = None
    expect("new_sig", decoded, case.get("new_sig"))
    state = genesis_state(case["genesis_hex"])
    try:
        details = authorize_node_key(state, node_key, new)
    except NotAuthorized:
        expect("authorized", False, case["authorized"])
        return
    expect("authorized", True, case["authorized"])
    prev = [] if details is None else [k.hex() for k in details.prev_node_keys]
    expect("prev_node_keys_hex", prev, case.get("prev_node_keys_hex") or [])
