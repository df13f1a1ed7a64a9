"""Authority Update Messages: twin of Tailscale's ``tka/aum.go``.

CBOR layout of an AUM (map with integer keys)::

    1  message_kind   uint8, always encoded
    2  prev_aum_hash  bytes, always encoded (null for a genesis AUM)
    3  key            Key, omitted when nil                       (add-key)
    4  key_id         bytes, omitted when nil or empty            (remove-key, update-key)
    5  state          State, omitted when nil                     (checkpoint)
    6  votes          uint, omitted when nil; 0 is encoded         (update-key)
    7  meta           map[str]str, omitted when nil or empty      (update-key)
    23 signatures     [{1: key_id, 2: signature}], omitted when nil or empty

The AUM hash is BLAKE2s-256 of the canonical re-serialization of the decoded
value, not of the bytes received: unknown fields are dropped and encodings
normalized first, so every node computes the same hash for the same meaning.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Final

from tka import codec
from tka._schema import Field, fill_bytes, fill_list, fill_str_map, fill_struct, fill_uint
from tka.errors import DecodeError, ValidationError
from tka.key import Key
from tka.state import State

__all__ = [
    "AUM",
    "HASH_SIZE",
    "AUMKind",
    "Signature",
    "aum_kind_name",
    "blake2s",
    "hash_from_text",
    "hash_to_text",
]

HASH_SIZE: Final = 32


def blake2s(data: bytes) -> bytes:
    """BLAKE2s-256 digest, the hash used for AUMs and node-key signatures."""
    return hashlib.blake2s(data).digest()


def hash_to_text(h: bytes) -> str:
    """Tailscale's text form of an AUM hash: base32, standard alphabet, no padding."""
    return base64.b32encode(h).decode("ascii").rstrip("=")


def hash_from_text(text: str) -> bytes:
    """Parse the text form of an AUM hash (52 base32 characters, no padding)."""
    if not isinstance(text, str):
        raise DecodeError(f"aum hash: expected text, got {type(text).__name__}")
    # Go checks the decoded length first, then decodes.
    if len(text) * 5 // 8 != HASH_SIZE:
        raise DecodeError(f"aum hash: text is {len(text)} characters, want 52")
    try:
        return base64.b32decode(text + "====")
    except (binascii.Error, ValueError):
        raise DecodeError("aum hash: not valid base32 (standard alphabet, upper case)") from None


class AUMKind(enum.IntEnum):
    """The kinds of AUM Tailscale defines. Unknown kinds are valid and act as no-ops."""

    INVALID = 0
    ADD_KEY = 1
    REMOVE_KEY = 2
    NO_OP = 3
    UPDATE_KEY = 4
    CHECKPOINT = 5


_KIND_NAMES: Final = {
    0: "invalid",
    1: "add-key",
    2: "remove-key",
    3: "no-op",
    4: "update-key",
    5: "checkpoint",
}


def aum_kind_name(kind: int) -> str:
    """Go's ``AUMKind.String()``: ``add-key``, ..., or ``AUM?<n>`` for unknown kinds."""
    return _KIND_NAMES.get(kind, f"AUM?<{kind}>")


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature over an AUM's sig-hash (``tkatype.Signature``); both fields always encoded."""

    key_id: bytes | None
    signature: bytes | None

    def to_cbor_obj(self) -> dict[int, Any]:
        """The value handed to the canonical encoder."""
        return {1: self.key_id, 2: self.signature}

    @classmethod
    def from_cbor_obj(cls, node: Any, where: str = "signature") -> Signature:
        """Fill a signature from a parsed CBOR node with Go's decoding rules."""
        return cls(**fill_struct(node, _SIG_FIELDS, where))


_SIG_FIELDS: Final[dict[int, Field]] = {
    1: ("key_id", fill_bytes, None),
    2: ("signature", fill_bytes, None),
}


@dataclass(frozen=True)
class AUM:
    """An Authority Update Message. Immutable; hashes are computed once and cached.

    ``None`` means absent (Go's nil) and differs from empty: see the module
    docstring for which fields are encoded when empty.
    """

    message_kind: int
    prev_aum_hash: bytes | None = None
    key: Key | None = None
    key_id: bytes | None = None
    state: State | None = None
    votes: int | None = None
    meta: dict[str, str] | None = None
    signatures: tuple[Signature, ...] | None = field(default=None)

    # -- wire form -------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> AUM:
        """Decode an AUM strictly (Tailscale's ``AUM.Unserialize``); no validation."""
        return cls.from_cbor_obj(codec.parse(data))

    @classmethod
    def from_cbor_obj(cls, node: Any, where: str = "aum") -> AUM:
        """Fill an AUM from a parsed CBOR node with Go's decoding rules."""
        v = fill_struct(node, _AUM_FIELDS, where)
        if v["signatures"] is not None:
            v["signatures"] = tuple(v["signatures"])
        return cls(**v)

    def to_cbor_obj(self, with_signatures: bool = True) -> dict[int, Any]:
        """The value handed to the canonical encoder."""
        out: dict[int, Any] = {1: self.message_kind, 2: self.prev_aum_hash}
        if self.key is not None:
            out[3] = self.key.to_cbor_obj()
        if self.key_id:
            out[4] = self.key_id
        if self.state is not None:
            out[5] = self.state.to_cbor_obj()
        if self.votes is not None:
            out[6] = self.votes
        if self.meta:
            out[7] = self.meta
        if with_signatures and self.signatures:
            out[23] = [s.to_cbor_obj() for s in self.signatures]
        return out

    @cached_property
    def canonical(self) -> bytes:
        """The canonical serialization (Tailscale's ``AUM.Serialize``)."""
        return codec.encode(self.to_cbor_obj())

    def to_bytes(self) -> bytes:
        """Serialize canonically; the inverse of :meth:`from_bytes` up to normalization."""
        return self.canonical

    @cached_property
    def hash(self) -> bytes:
        """The AUM hash: BLAKE2s-256 of the canonical serialization."""
        return blake2s(self.canonical)

    @cached_property
    def sig_hash(self) -> bytes:
        """The digest signatures are made over.

        Signatures are left out, else the digest would depend on itself.
        """
        return blake2s(codec.encode(self.to_cbor_obj(with_signatures=False)))

    @property
    def hash_text(self) -> str:
        """The hash in Tailscale's base32 text form."""
        return hash_to_text(self.hash)

    @property
    def parent(self) -> bytes | None:
        """The parent's hash, or ``None`` for an AUM with no parent.

        As Go's ``AUM.Parent``: a previous hash of other than 32 bytes is
        truncated or zero-padded to 32.
        """
        if not self.prev_aum_hash:
            return None
        return self.prev_aum_hash[:HASH_SIZE].ljust(HASH_SIZE, b"\x00")

    @property
    def kind_name(self) -> str:
        """Go's name for this AUM's kind."""
        return aum_kind_name(self.message_kind)

    # -- rules -----------------------------------------------------------

    def static_validate(self) -> None:
        """Tailscale's ``AUM.StaticValidate``: shape checks that need no state."""
        if self.key is not None:
            self.key.static_validate()
        if self.prev_aum_hash is not None and len(self.prev_aum_hash) == 0:
            raise ValidationError("aum: an absent parent must be null, not an empty byte string")
        for i, sig in enumerate(self.signatures or ()):
            if len(sig.key_id or b"") != 32 or len(sig.signature or b"") != 64:
                raise ValidationError(
                    f"aum: signature {i} has a missing key ID or malformed signature"
                )
        if self.state is not None:
            self.state.static_validate_checkpoint()
        kind = self.message_kind
        if kind == AUMKind.ADD_KEY:
            if self.key is None:
                raise ValidationError("aum: add-key AUMs must contain a key")
            if (
                self.key_id is not None
                or self.state is not None
                or self.votes is not None
                or self.meta is not None
            ):
                raise ValidationError("aum: add-key AUMs may only specify a key")
        elif kind == AUMKind.REMOVE_KEY:
            if not self.key_id:
                raise ValidationError("aum: remove-key AUMs must specify a key ID")
            if (
                self.key is not None
                or self.state is not None
                or self.votes is not None
                or self.meta is not None
            ):
                raise ValidationError("aum: remove-key AUMs may only specify a key ID")
        elif kind == AUMKind.UPDATE_KEY:
            if not self.key_id:
                raise ValidationError("aum: update-key AUMs must specify a key ID")
            if self.meta is None and self.votes is None:
                raise ValidationError("aum: update-key AUMs must update votes or metadata")
            if self.key is not None or self.state is not None:
                raise ValidationError("aum: update-key AUMs may only specify key ID, votes, meta")
        elif kind == AUMKind.CHECKPOINT:
            if self.state is None:
                raise ValidationError("aum: checkpoint AUMs must specify the state")
            if (
                self.key_id is not None
                or self.key is not None
                or self.votes is not None
                or self.meta is not None
            ):
                raise ValidationError("aum: checkpoint AUMs may only specify the state")
        # No-op and unknown kinds: nothing to check. Unknown kinds come from
        # newer nodes, which promise only to add features, so they are valid.

    def weight(self, state: State) -> int:
        """Sum of votes of the distinct trusted keys that signed this AUM.

        Used to choose between forks; the caller must have verified the
        signatures. Signatures by keys the state does not trust count zero.
        """
        seen: set[bytes] = set()
        total = 0
        for sig in self.signatures or ():
            kid = sig.key_id or b""
            if kid in seen:
                continue
            key = state.get_key(kid)
            if key is None:
                continue
            seen.add(kid)
            total += key.votes
        return total

    def with_signatures(self, signatures: tuple[Signature, ...] | None) -> AUM:
        """Return a copy carrying *signatures* (hash caches are not carried over)."""
        return replace(self, signatures=signatures)


_AUM_FIELDS: Final[dict[int, Field]] = {
    1: ("message_kind", lambda n, w: fill_uint(n, 8, w), 0),
    2: ("prev_aum_hash", fill_bytes, None),
    3: ("key", lambda n, w: None if n is None else Key.from_cbor_obj(n, w), None),
    4: ("key_id", fill_bytes, None),
    5: ("state", lambda n, w: None if n is None else State.from_cbor_obj(n, w), None),
    6: ("votes", lambda n, w: fill_uint(n, 64, w, zero=None), None),
    7: ("meta", fill_str_map, None),
    23: ("signatures", lambda n, w: fill_list(n, Signature.from_cbor_obj, w), None),
}
