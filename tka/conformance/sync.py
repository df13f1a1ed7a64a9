"""Conformance checks for the ``sync`` kind: offers, missing AUMs, exchanges, text form."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from tka.aum import AUM, hash_from_text
from tka.authority import Authority
from tka.conformance._json import b32
from tka.conformance._util import Context, close_store, expect, make_store, unhex
from tka.errors import TKAError
from tka.sync import SYNC_RULES_MAIN, SyncOffer, SyncRules, missing_aums, sync_offer

__all__ = ["check"]


def _open(ctx: Context, tmp: str, side: dict[str, Any]) -> tuple[Any, Authority]:
    store = make_store(ctx, tmp)
    for h in side["aums_hex"]:
        store.commit_verified([AUM.from_bytes(unhex(h) or b"")])
    hint = side["last_active_ancestor_b32"]
    if hint is not None:
        store.set_last_active_ancestor(hash_from_text(hint))
    return store, Authority.open(store)


def _offer_json(o: SyncOffer) -> dict[str, Any]:
    return {"head_b32": b32(o.head), "ancestors_b32": [b32(a) for a in o.ancestors]}


def _offer_from_json(o: dict[str, Any]) -> SyncOffer:
    return SyncOffer.from_text(o["head_b32"], o["ancestors_b32"])


def _missing(
    a: Authority,
    store: Any,
    offer: SyncOffer,
    want: dict[str, Any],
    what: str,
    rules: SyncRules,
) -> list[AUM] | None:
    try:
        got = missing_aums(a, store, offer, rules=rules)
    except TKAError:
        expect(f"{what}.ok", False, want["ok"])
        return None
    expect(f"{what}.ok", True, want["ok"])
    expect(f"{what}.hashes_b32", [x.hash_text for x in got], want["hashes_b32"])
    return got


def _inform(a: Authority, store: Any, aums: list[AUM] | None, want: bool | None, what: str) -> None:
    if not aums:
        expect(what, None, want)
        return
    try:
        a.inform(store, [AUM.from_bytes(x.to_bytes()) for x in aums])
        ok = True
    except TKAError:
        ok = False
    expect(what, ok, want)


def _check_text(case: dict[str, Any]) -> None:
    try:
        offer = SyncOffer.from_text(case["head"], case["ancestors"])
    except TKAError:
        expect("ok", False, case["ok"])
        return
    expect("ok", True, case["ok"])
    expect("head_hex", offer.head.hex(), case["head_hex"])
    expect("ancestors_hex", [a.hex() for a in offer.ancestors], case["ancestors_hex"])
    head, ancestors = offer.to_text()
    expect("reencoded_head", head, case["reencoded_head"])
    expect("reencoded_ancestors", ancestors, case["reencoded_ancestors"])


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``sync`` vector case under ``ctx.sync_rules`` (main's when unset)."""
    kind = case["case_type"]
    rules = ctx.sync_rules or SYNC_RULES_MAIN
    if kind == "offer_text":
        _check_text(case)
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "local"))
        local_store, local = _open(ctx, os.path.join(tmp, "local"), case["local"])
        stores = [local_store]
        try:
            expect("local_head_b32", local.head.hash_text, case["local_head_b32"])
            local_offer = sync_offer(local, local_store, rules=rules)
            expect("local_offer", _offer_json(local_offer), case["local_offer"])
            if kind == "missing":
                _missing(
                    local,
                    local_store,
                    _offer_from_json(case["remote_offer"]),
                    case["local_missing_aums"],
                    "local_missing_aums",
                    rules,
                )
                return
            os.makedirs(os.path.join(tmp, "remote"))
            remote_store, remote = _open(ctx, os.path.join(tmp, "remote"), case["remote"])
            stores.append(remote_store)
            expect("remote_head_b32", remote.head.hash_text, case["remote_head_b32"])
            remote_offer = sync_offer(remote, remote_store, rules=rules)
            expect("remote_offer", _offer_json(remote_offer), case["remote_offer"])
            to_remote = _missing(
                local,
                local_store,
                remote_offer,
                case["local_missing_aums"],
                "local_missing_aums",
                rules,
            )
            to_local = _missing(
                remote,
                remote_store,
                local_offer,
                case["remote_missing_aums"],
                "remote_missing_aums",
                rules,
            )
            after = case["after_exchange"]
            _inform(remote, remote_store, to_remote, after["remote_inform_ok"], "remote_inform_ok")
            _inform(local, local_store, to_local, after["local_inform_ok"], "local_inform_ok")
            expect("after local_head_b32", local.head.hash_text, after["local_head_b32"])
            expect("after remote_head_b32", remote.head.hash_text, after["remote_head_b32"])
        finally:
            for s in stores:
                close_store(s)
