"""Conformance checks for the ``compaction`` kind."""

from __future__ import annotations

import tempfile
from typing import Any

from tka.aum import AUM, hash_from_text, hash_to_text
from tka.authority import Authority
from tka.compaction import CompactionOptions
from tka.conformance._json import b32
from tka.conformance._util import Context, close_store, expect, make_store, unhex
from tka.conformance.chain import check_open
from tka.errors import TKAError

__all__ = ["check"]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``compaction`` vector case."""
    clock = _Clock()
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(ctx, tmp, clock)
        try:
            for h, t in zip(case["aums_hex"], case["commit_times_unix"], strict=True):
                clock.now = float(t)
                store.commit_verified([AUM.from_bytes(unhex(h) or b"")])
            hint = case["last_active_ancestor_b32"]
            if hint is not None:
                store.set_last_active_ancestor(hash_from_text(hint))
            authority = Authority.open(store)
            expect("head_b32", authority.head.hash_text, case["head_b32"])
            opts = CompactionOptions(
                case["options"]["min_chain"], case["options"]["min_age_seconds"]
            )
            before = set(store.all_hashes())
            clock.now = float(case["now_unix"])
            try:
                ancestor = authority.compact(store, opts, now=float(case["now_unix"]))
            except TKAError:
                expect("ok", False, case["ok"])
                return
            expect("ok", True, case["ok"])
            remaining = set(store.all_hashes())
            expect(
                "remaining_b32", sorted(hash_to_text(h) for h in remaining), case["remaining_b32"]
            )
            expect(
                "deleted_b32",
                sorted(hash_to_text(h) for h in before - remaining),
                case["deleted_b32"],
            )
            expect(
                "new_last_active_ancestor_b32", b32(ancestor), case["new_last_active_ancestor_b32"]
            )
            if "authority_oldest_ancestor_b32" in case:
                expect(
                    "authority_oldest_ancestor_b32",
                    b32(authority.oldest_ancestor.hash),
                    case["authority_oldest_ancestor_b32"],
                )
            check_open(store, case["open_after"], "open_after.")
        finally:
            close_store(store)
