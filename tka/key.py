"""A key trusted by the authority: twin of Tailscale's ``tka/key.go``.

CBOR layout (map with integer keys)::

    1  kind    uint8, always encoded (1 = Ed25519)
    2  votes   uint, always encoded
    3  public  bytes, always encoded (null when nil)
    12 meta    map[str]str, omitted when nil or empty
"""

from __future__ import annotations

from typing import Any, Final

from tka import codec
from tka._record import FrozenRecord, slot_setters
from tka._schema import (
    Field,
    fill_bytes,
    fill_str_map,
    fill_struct,
    fill_uint,
    key_shapes,
    plain_text_map,
)
from tka.errors import ValidationError
from tka.limits import KEY_VOTES_MAX, MAX_META_BYTES

__all__ = ["KEY_KIND_25519", "KEY_KIND_INVALID", "Key", "key_kind_name"]

KEY_KIND_INVALID: Final = 0
KEY_KIND_25519: Final = 1


def key_kind_name(kind: int) -> str:
    """Return Go's ``KeyKind.String()`` for *kind*."""
    if kind == KEY_KIND_INVALID:
        return "invalid"
    if kind == KEY_KIND_25519:
        return "25519"
    return f"Key?<{kind}>"


class Key(FrozenRecord):
    """A trusted signing key with its vote weight and optional metadata.

    Immutable; ``meta`` is so by convention: do not mutate it in place.
    """

    __slots__ = ("kind", "meta", "public", "votes")
    _fields = __match_args__ = ("kind", "votes", "public", "meta")

    kind: int
    votes: int
    public: bytes | None
    meta: dict[str, str] | None

    def __init__(
        self, kind: int, votes: int, public: bytes | None, meta: dict[str, str] | None = None
    ) -> None:
        _set_kind(self, kind)
        _set_votes(self, votes)
        _set_public(self, public)
        _set_meta(self, meta)

    @classmethod
    def ed25519(cls, public: bytes, votes: int = 1, meta: dict[str, str] | None = None) -> Key:
        """Build an Ed25519 key (kind 1)."""
        return cls(KEY_KIND_25519, votes, bytes(public), meta)

    @property
    def key_id(self) -> bytes:
        """The key's ID: for Ed25519 keys, the public key bytes themselves.

        Raises :class:`~tka.errors.ValidationError` for kinds tka cannot use.
        """
        if self.kind != KEY_KIND_25519:
            raise ValidationError(f"key: unknown key kind {key_kind_name(self.kind)}")
        # A nil public key has an empty ID, which matches nothing a valid
        # AUM or signature can name (those IDs are never empty).
        return self.public or b""

    def static_validate(self) -> None:
        """Apply Tailscale's ``Key.StaticValidate`` rules."""
        if self.votes > KEY_VOTES_MAX:
            raise ValidationError(f"key: excessive weight {self.votes} > {KEY_VOTES_MAX}")
        if self.votes == 0:
            raise ValidationError("key: votes must be non-zero")
        if self.meta:
            size = sum(len(k.encode()) + len(v.encode()) for k, v in self.meta.items())
            if size > MAX_META_BYTES:
                raise ValidationError(f"key: metadata too big ({size} > {MAX_META_BYTES} bytes)")
        if self.kind != KEY_KIND_25519:
            raise ValidationError(f"key: unrecognized key kind {key_kind_name(self.kind)}")

    def to_cbor_obj(self) -> dict[int, Any]:
        """The value handed to the canonical encoder (maps in canonical key order)."""
        out: dict[int, Any] = {1: self.kind, 2: self.votes, 3: self.public}
        if self.meta:
            out[12] = codec.ordered_map(self.meta)
        return out

    @classmethod
    def from_cbor_obj(cls, node: Any, where: str = "key") -> Key:
        """Fill a key from a parsed CBOR node with Go's decoding rules."""
        return cls(**fill_struct(node, _FIELDS, where))

    @classmethod
    def _from_plain(cls, node: Any) -> Key | None:
        """The fast path's narrow filler (see the end of :mod:`tka._schema`).

        Written out flat: every checkpoint read from storage holds keys.
        """
        if type(node) is not dict:
            return None
        keys = tuple(node)
        if keys not in _SHAPES:
            return None
        for k in keys:
            if type(k) is not int:  # True == 1 passes the membership test
                return None
        kind, votes, public = node[1], node[2], node[3]
        if type(kind) is not int or not 0 <= kind <= 0xFF:
            return None
        if type(votes) is not int or not 0 <= votes < 1 << 64:
            return None
        if public is not None and type(public) is not bytes:
            return None
        meta = None
        if len(keys) == 4:
            meta = plain_text_map(node[12])
            if meta is None:
                return None
        key: Key = _new(cls)
        # What __init__ does, without the call.
        _set_kind(key, kind)
        _set_votes(key, votes)
        _set_public(key, public)
        _set_meta(key, meta)
        return key


_FIELDS: Final[dict[int, Field]] = {
    1: ("kind", lambda n, w: fill_uint(n, 8, w), 0),
    2: ("votes", lambda n, w: fill_uint(n, 64, w), 0),
    3: ("public", fill_bytes, None),
    12: ("meta", fill_str_map, None),
}

# Keys 1-3 are always written, 12 only when there is metadata.
_SHAPES: Final = key_shapes((1, 2, 3), (12,))
_new: Final = object.__new__
_set_kind, _set_votes, _set_public, _set_meta = slot_setters(Key, Key._fields)
