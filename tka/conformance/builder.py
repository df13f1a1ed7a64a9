"""Conformance checks for the ``builder`` kind: the exact AUMs ``UpdateBuilder`` makes."""

from __future__ import annotations

import tempfile
import warnings
from typing import Any

from tka.aum import AUM
from tka.authority import Authority, Signer
from tka.builder import UpdateBuilder
from tka.conformance._json import state_json
from tka.conformance._util import Context, close_store, expect, make_store, unhex
from tka.errors import TKAError
from tka.key import Key

__all__ = ["check", "key_from_json"]


def key_from_json(k: dict[str, Any]) -> Key:
    """A Key from the vectors' JSON shape."""
    return Key(k["kind"], k["votes"], unhex(k["public"]), k["meta"])


def _apply_op(builder: UpdateBuilder, op: dict[str, Any]) -> None:
    name = op["op"]
    if name == "add_key":
        builder.add_key(key_from_json(op["key"]))
    elif name == "remove_key":
        builder.remove_key(unhex(op["key_id"]) or b"")
    elif name == "set_key_vote":
        builder.set_key_vote(unhex(op["key_id"]) or b"", op["votes"])
    elif name == "set_key_meta":
        builder.set_key_meta(unhex(op["key_id"]) or b"", op["meta"])
    else:
        raise ValueError(f"unknown op {name!r}")


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``builder`` vector case."""
    genesis = AUM.from_bytes(unhex(case["genesis_hex"]) or b"")
    history = [AUM.from_bytes(unhex(h) or b"") for h in case["history_hex"]]
    signer = Signer(tuple(unhex(s) or b"" for s in case["signer_seeds_hex"]))
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(ctx, tmp)
        try:
            authority = Authority.bootstrap(store, genesis)
            if history:
                authority.inform(store, history)
            expect("head_before_b32", authority.head.hash_text, case["head_before_b32"])
            # Tailscale's rules exactly: the key-count safety is for our CLI.
            builder = UpdateBuilder(authority, signer, strict=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for i, (op, want) in enumerate(zip(case["ops"], case["op_results"], strict=True)):
                    try:
                        _apply_op(builder, op)
                        ok = True
                    except TKAError:
                        ok = False
                    expect(f"op_results[{i}].ok", ok, want["ok"])
            between = case.get("inform_between_hex")
            if between:
                authority.inform(store, [AUM.from_bytes(unhex(h) or b"") for h in between])
            try:
                out = builder.finalize(store)
            except TKAError:
                expect("finalize_ok", False, case["finalize_ok"])
                return
            expect("finalize_ok", True, case["finalize_ok"])
            expect("output_hex", [a.to_bytes().hex() for a in out], case["output_hex"])
            expect("output_hashes_b32", [a.hash_text for a in out], case["output_hashes_b32"])
            expect("output_kinds", [a.kind_name for a in out], case["output_kinds"])
            if "inform_output_ok" not in case:
                # Nothing was produced, so nothing was informed.
                expect("output is empty", out, [])
                return
            # Decode and inform the output as a peer would.
            decoded = [AUM.from_bytes(a.to_bytes()) for a in out]
            try:
                authority.inform(store, decoded)
                ok = True
            except TKAError:
                ok = False
            expect("inform_output_ok", ok, case["inform_output_ok"])
            if case.get("state_after") is not None:
                expect("state_after", state_json(authority.state), case["state_after"])
            if case.get("head_after_b32") is not None:
                expect("head_after_b32", authority.head.hash_text, case["head_after_b32"])
        finally:
            close_store(store)
