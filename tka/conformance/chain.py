"""Conformance checks for the ``chain`` kind: ``Open`` over stored AUMs."""

from __future__ import annotations

import tempfile
from typing import Any

from tka.aum import AUM, hash_from_text
from tka.authority import Authority
from tka.conformance._json import b32, state_json
from tka.conformance._util import Context, close_store, expect, make_store, unhex
from tka.errors import TKAError

__all__ = ["check", "check_open"]


def check_open(store: Any, want: dict[str, Any], what: str = "") -> Authority | None:
    """Open *store* and compare with a vector's ``ok``/``head_b32``/... fields."""
    try:
        authority = Authority.open(store)
    except TKAError:
        expect(f"{what}ok", False, want["ok"])
        return None
    expect(f"{what}ok", True, want["ok"])
    expect(f"{what}head_b32", authority.head.hash_text, want["head_b32"])
    expect(
        f"{what}oldest_ancestor_b32",
        b32(authority.oldest_ancestor.hash),
        want["oldest_ancestor_b32"],
    )
    expect(f"{what}state", state_json(authority.state), want["state"])
    return authority


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``chain`` vector case."""
    aums = [AUM.from_bytes(unhex(h) or b"") for h in case["aums_hex"]]
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(ctx, tmp)
        try:
            for aum in aums:
                store.commit_verified([aum])
            hint = case["last_active_ancestor_b32"]
            if hint is not None:
                store.set_last_active_ancestor(hash_from_text(hint))
            heads = sorted(a.hash_text for a in store.heads())
            expect("heads_b32", heads, case["heads_b32"])
            check_open(store, case)
        finally:
            close_store(store)
