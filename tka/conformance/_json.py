"""Render tka values in the JSON shapes the vector files use, for comparison."""

from __future__ import annotations

from typing import Any

from tka.aum import AUM, aum_kind_name, hash_to_text
from tka.key import Key
from tka.sig import NodeKeySignature, sig_kind_name
from tka.state import State

__all__ = ["aum_json", "b32", "hx", "key_json", "nks_json", "state_json"]


def hx(b: bytes | None) -> str | None:
    """Lower-case hex, ``None`` kept."""
    return None if b is None else b.hex()


def b32(h: bytes | None) -> str | None:
    """Base32 text form of an AUM hash, ``None`` kept."""
    return None if h is None else hash_to_text(h)


def key_json(k: Key) -> dict[str, Any]:
    """A Key as the vectors write it."""
    return {"kind": k.kind, "votes": k.votes, "public": hx(k.public), "meta": k.meta}


def state_json(s: State) -> dict[str, Any]:
    """A State as the vectors write it."""
    return {
        "last_aum_hash": hx(s.last_aum_hash),
        "disablement_values": None
        if s.disablement_values is None
        else [hx(v) for v in s.disablement_values],
        "keys": None if s.keys is None else [key_json(k) for k in s.keys],
        "state_id1": s.state_id1,
        "state_id2": s.state_id2,
    }


def aum_json(a: AUM) -> dict[str, Any]:
    """A decoded AUM as the vectors write it."""
    return {
        "message_kind": a.message_kind,
        "message_kind_name": aum_kind_name(a.message_kind),
        "prev_aum_hash": hx(a.prev_aum_hash),
        "key": None if a.key is None else key_json(a.key),
        "key_id": hx(a.key_id),
        "state": None if a.state is None else state_json(a.state),
        "votes": a.votes,
        "meta": a.meta,
        "signatures": None
        if a.signatures is None
        else [{"key_id": hx(s.key_id), "signature": hx(s.signature)} for s in a.signatures],
    }


def nks_json(s: NodeKeySignature) -> dict[str, Any]:
    """A decoded node-key signature as the vectors write it."""
    return {
        "sig_kind": s.sig_kind,
        "sig_kind_name": sig_kind_name(s.sig_kind),
        "pubkey": hx(s.pubkey),
        "key_id": hx(s.key_id),
        "signature": hx(s.signature),
        "nested": None if s.nested is None else nks_json(s.nested),
        "wrapping_pubkey": hx(s.wrapping_pubkey),
    }
