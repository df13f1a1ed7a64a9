"""Conformance checks for the ``inform`` kind: ``Bootstrap`` then batches of ``Inform``."""

from __future__ import annotations

import tempfile
from typing import Any

from tka.aum import AUM
from tka.authority import Authority
from tka.conformance._json import b32, state_json
from tka.conformance._util import Context, close_store, expect, make_store, unhex
from tka.conformance.chain import check_open
from tka.errors import TKAError

__all__ = ["authority_json", "check"]


def authority_json(a: Authority) -> dict[str, Any]:
    """The ``{head_b32, oldest_ancestor_b32, state}`` shape the vectors use."""
    return {
        "head_b32": a.head.hash_text,
        "oldest_ancestor_b32": b32(a.oldest_ancestor.hash),
        "state": state_json(a.state),
    }


def _subset(d: dict[str, Any]) -> dict[str, Any]:
    return {k: d[k] for k in ("head_b32", "oldest_ancestor_b32", "state")}


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``inform`` vector case."""
    genesis = AUM.from_bytes(unhex(case["genesis_hex"]) or b"")
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(ctx, tmp)
        try:
            try:
                authority = Authority.bootstrap(store, genesis)
            except TKAError:
                expect("bootstrap_ok", False, case["bootstrap_ok"])
                return
            expect("bootstrap_ok", True, case["bootstrap_ok"])
            expect("after_bootstrap", authority_json(authority), _subset(case["after_bootstrap"]))
            for i, step in enumerate(case["steps"]):
                batch = [AUM.from_bytes(unhex(h) or b"") for h in step["batch_hex"]]
                try:
                    authority.inform(store, batch)
                    ok = True
                except TKAError:
                    ok = False
                expect(f"steps[{i}].ok", ok, step["ok"])
                expect(f"steps[{i}] authority", authority_json(authority), _subset(step))
            reopen = case.get("reopen")
            if reopen is not None:
                check_open(store, reopen, "reopen.")
        finally:
            close_store(store)
