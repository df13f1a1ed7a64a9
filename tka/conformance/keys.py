"""Conformance checks for the ``keys`` kind: tailnet-lock and node key text forms."""

from __future__ import annotations

from typing import Any

from tka.conformance._util import Context, Mismatch, expect, unhex
from tka.errors import DecodeError
from tka.nlkeys import NLPrivate, NLPublic, NodePublic

__all__ = ["check"]


def _check_nl_key(case: dict[str, Any]) -> None:
    seed = unhex(case["seed_hex"]) or b""
    priv = NLPrivate.from_seed(seed)
    expect("private_hex", priv.raw.hex(), case["private_hex"])
    expect("public_hex", priv.public().raw.hex(), case["public_hex"])
    expect("private_text", priv.text(), case["private_text"])
    expect("public_text", priv.public().text(), case["public_text"])
    expect("public_cli_text", priv.public().cli_text(), case["public_cli_text"])
    expect("key_id_hex", priv.key_id.hex(), case["key_id_hex"])
    expect("public().key_id", priv.public().key_id.hex(), case["key_id_hex"])
    # The text forms must read back to the same keys.
    expect("nlpriv round trip", NLPrivate.from_text(case["private_text"]) == priv, True)
    expect("nlpub round trip", NLPublic.from_text(case["public_text"]), priv.public())
    expect("tlpub round trip", NLPublic.from_text(case["public_cli_text"]), priv.public())


def _check_node_key(case: dict[str, Any]) -> None:
    raw = unhex(case["raw_hex"]) or b""
    key = NodePublic(raw)
    expect("text", key.text(), case["text"])
    expect("binary_hex", key.binary().hex(), case["binary_hex"])
    expect("short_string", key.short_string(), case["short_string"])
    expect("from_text", NodePublic.from_text(case["text"]), key)
    expect("from_binary", NodePublic.from_binary(unhex(case["binary_hex"]) or b""), key)


def _check_parse(case: dict[str, Any]) -> None:
    kind = case["case_type"]
    text = case["input"]
    got: bytes | None
    try:
        if kind == "parse_nl_public":
            got = NLPublic.from_text(text).raw
        elif kind == "parse_nl_private":
            got = NLPrivate.from_text(text).public().raw
        else:
            got = NodePublic.from_text(text).raw
    except DecodeError:
        got = None
    expect("ok", got is not None, case["ok"])
    if got is not None:
        field = "raw_hex" if kind == "parse_node_public" else "public_hex"
        expect(field, got.hex(), case[field])


def check(case: dict[str, Any], ctx: Context) -> None:
    """Check one ``keys`` vector case."""
    kind = case.get("case_type")
    if kind == "nl_key":
        _check_nl_key(case)
    elif kind == "node_key":
        _check_node_key(case)
    elif kind in ("parse_nl_public", "parse_nl_private", "parse_node_public"):
        _check_parse(case)
    else:
        raise Mismatch(f"unknown keys case_type {kind!r}")
