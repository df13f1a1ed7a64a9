"""Tailnet-lock keys and node public keys, in the text and binary forms Tailscale uses.

Three key types live here:

* :class:`NLPrivate` -- a node's tailnet-lock signing key. It is held in Go's
  64-byte Ed25519 form, ``seed || public``, and written as ``nlpriv:<hex>``.
* :class:`NLPublic` -- the public half. Written as ``nlpub:<hex>``
  (``MarshalText``) or ``tlpub:<hex>`` (what the ``tailscale lock`` CLI shows);
  both are read back.
* :class:`NodePublic` -- a WireGuard node key, ``nodekey:<hex>`` in text and
  ``b"np" + raw`` in Go's binary form (the form embedded in node-key
  signatures).

Parsing follows Tailscale's ``types/key`` rules exactly: the prefix is matched
case-sensitively, the hex part must have exactly twice the key length in
*bytes* and may use upper- or lower-case digits, and nothing else (no
whitespace, no ``0x``) is accepted. Every parse failure raises
:class:`~tka.errors.DecodeError`; the message names the expected prefix or
length but never repeats the input, because it might be a private key.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
from typing import Final

import nacl.signing

from tka import ed25519
from tka.errors import DecodeError

__all__ = [
    "NLPRIVATE_PREFIX",
    "NLPUBLIC_CLI_PREFIX",
    "NLPUBLIC_PREFIX",
    "NODE_PUBLIC_BINARY_PREFIX",
    "NODE_PUBLIC_PREFIX",
    "NLPrivate",
    "NLPublic",
    "NodePublic",
]

#: Text prefix of a private tailnet-lock key.
NLPRIVATE_PREFIX: Final = "nlpriv:"
#: Text prefix ``NLPublic.MarshalText`` writes.
NLPUBLIC_PREFIX: Final = "nlpub:"
#: Text prefix the ``tailscale lock`` CLI prints; also accepted when parsing.
NLPUBLIC_CLI_PREFIX: Final = "tlpub:"
#: Text prefix of a node public key.
NODE_PUBLIC_PREFIX: Final = "nodekey:"
#: Prefix of Go's ``NodePublic.MarshalBinary`` form.
NODE_PUBLIC_BINARY_PREFIX: Final = b"np"

_SEED_SIZE: Final = 32
_PUBLIC_SIZE: Final = 32
_PRIVATE_SIZE: Final = 64
_NODE_SIZE: Final = 32

#: The digits Go's hex decoder takes (either case), and nothing else.
_HEX_DIGITS: Final = re.compile(rb"[0-9a-fA-F]*")


def _as_bytes(text: str | bytes, what: str) -> bytes:
    """Return *text* as the bytes Go would see for the same string."""
    if isinstance(text, bytes):
        return text
    if isinstance(text, str):
        try:
            # surrogateescape keeps strings that came from undecodable bytes
            # byte-exact; lone surrogates that cannot be encoded are rejected.
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise DecodeError(f"{what}: text is not valid UTF-8") from None
    raise DecodeError(f"{what}: expected str or bytes, got {type(text).__name__}")


def _parse_hex_key(text: str | bytes, prefix: str, size: int) -> bytes:
    """Decode ``<prefix><hex>`` into exactly *size* bytes, as Go's ``parseHex``.

    The checks run in Go's order (prefix, then length, then digits) so the
    error a caller sees is the one Tailscale would report. Messages never
    contain any part of the input.
    """
    raw = _as_bytes(text, "key text")
    pre = prefix.encode("ascii")
    if not raw.startswith(pre):
        raise DecodeError(f"key hex string doesn't have expected type prefix {prefix}")
    digits = raw[len(pre) :]
    want = size * 2
    # Go counts bytes, not characters, so a multi-byte character changes the size.
    if len(digits) != want:
        raise DecodeError(f"key hex has the wrong size, got {len(digits)} want {want}")
    # Checked first: bytes.fromhex alone would also skip spaces between digits.
    if _HEX_DIGITS.fullmatch(digits) is None:
        raise DecodeError("invalid hex character in key")
    return bytes.fromhex(digits.decode("ascii"))


def _check_raw(value: object, size: int, what: str) -> bytes:
    """Validate a raw byte-string argument of fixed *size*."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise DecodeError(f"{what}: expected bytes, got {type(value).__name__}")
    raw = bytes(value)
    if len(raw) != size:
        raise DecodeError(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


class NLPublic:
    """The public half of a tailnet-lock key (32 Ed25519 public-key bytes).

    Any 32 bytes are accepted, exactly as Go's ``NLPublic`` does: the value is
    not checked to be a valid curve point here (signature verification decides
    what a point is worth).
    """

    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, raw: bytes) -> None:
        """Wrap 32 raw public-key bytes."""
        object.__setattr__(self, "_raw", _check_raw(raw, _PUBLIC_SIZE, "tailnet-lock public key"))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("NLPublic is immutable")

    @classmethod
    def from_text(cls, text: str | bytes) -> NLPublic:
        """Parse ``nlpub:<hex>`` or ``tlpub:<hex>``, as Go's ``NLPublic.UnmarshalText``.

        Go tries ``nlpub:`` first and otherwise insists on ``tlpub:``, so the
        error for an input with neither prefix names ``tlpub:``.
        """
        raw = _as_bytes(text, "key text")
        if raw.startswith(NLPUBLIC_PREFIX.encode("ascii")):
            return cls(_parse_hex_key(raw, NLPUBLIC_PREFIX, _PUBLIC_SIZE))
        return cls(_parse_hex_key(raw, NLPUBLIC_CLI_PREFIX, _PUBLIC_SIZE))

    @property
    def raw(self) -> bytes:
        """The 32 raw public-key bytes."""
        return self._raw

    @property
    def key_id(self) -> bytes:
        """The tka KeyID of this key: for Ed25519 keys it is the public key itself."""
        return self._raw

    def text(self) -> str:
        """Return ``nlpub:<lower-case hex>`` (Go's ``MarshalText``)."""
        return NLPUBLIC_PREFIX + self._raw.hex()

    def cli_text(self) -> str:
        """Return ``tlpub:<lower-case hex>`` (Go's ``CLIString``, what the CLI prints)."""
        return NLPUBLIC_CLI_PREFIX + self._raw.hex()

    def is_zero(self) -> bool:
        """Report whether every byte is zero (Go's ``IsZero``)."""
        return hmac.compare_digest(self._raw, bytes(_PUBLIC_SIZE))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NLPublic):
            return NotImplemented
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash((NLPublic, self._raw))

    def __repr__(self) -> str:
        return f"NLPublic({self.cli_text()})"

    __str__ = cli_text


class NLPrivate:
    """A tailnet-lock private key, stored as Go does: 64 bytes ``seed || public``.

    The stored public half is authoritative. Go's ``UnmarshalText`` accepts 64
    bytes whose public half does not belong to the seed, and ``Public``,
    ``KeyID`` and signing then use that stored half; this class behaves the
    same way. ``repr``/``str`` never show key material: use :meth:`text` to
    export the key on purpose.
    """

    __slots__ = ("_key",)
    _key: bytes

    def __init__(self, key: bytes) -> None:
        """Wrap the 64-byte Go form ``seed || public`` (taken as is, not re-derived)."""
        object.__setattr__(self, "_key", _check_raw(key, _PRIVATE_SIZE, "tailnet-lock private key"))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("NLPrivate is immutable")

    @classmethod
    def generate(cls) -> NLPrivate:
        """Create a new random key from 32 bytes of OS randomness."""
        return cls.from_seed(os.urandom(_SEED_SIZE))

    @classmethod
    def from_seed(cls, seed: bytes) -> NLPrivate:
        """Derive the key for a 32-byte Ed25519 seed (RFC 8032 key generation)."""
        seed = _check_raw(seed, _SEED_SIZE, "ed25519 seed")
        public = bytes(nacl.signing.SigningKey(seed).verify_key)
        return cls(seed + public)

    @classmethod
    def from_text(cls, text: str | bytes) -> NLPrivate:
        """Parse ``nlpriv:<128 hex digits>``, as Go's ``NLPrivate.UnmarshalText``.

        Only the ``nlpriv:`` prefix is accepted (there is no ``tlpriv:``). The
        public half is not checked against the seed, matching Go.
        """
        return cls(_parse_hex_key(text, NLPRIVATE_PREFIX, _PRIVATE_SIZE))

    @property
    def seed(self) -> bytes:
        """The 32-byte Ed25519 seed (the secret part)."""
        return self._key[:_SEED_SIZE]

    @property
    def raw(self) -> bytes:
        """The full 64-byte Go form ``seed || public``."""
        return self._key

    def public(self) -> NLPublic:
        """Return the stored public half (Go's ``Public``)."""
        return NLPublic(self._key[_SEED_SIZE:])

    @property
    def key_id(self) -> bytes:
        """The tka KeyID of this key: its (stored) public key."""
        return self._key[_SEED_SIZE:]

    def text(self) -> str:
        """Return ``nlpriv:<lower-case hex>`` (Go's ``MarshalText``). This is secret."""
        return NLPRIVATE_PREFIX + self._key.hex()

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of *message*, exactly as Go's ``ed25519.Sign``.

        libsodium's ``crypto_sign`` is used on the full 64-byte key because,
        like Go, it hashes the *stored* public half into the signature; a key
        whose halves do not match therefore signs the same bytes as in Go.
        """
        return ed25519.sign(self._key, message)

    def is_zero(self) -> bool:
        """Report whether every byte is zero (Go's ``IsZero``)."""
        return hmac.compare_digest(self._key, bytes(_PRIVATE_SIZE))

    def __eq__(self, other: object) -> bool:
        # Constant time, because == on secrets must not leak a prefix length.
        if not isinstance(other, NLPrivate):
            return NotImplemented
        return hmac.compare_digest(self._key, other._key)

    # Go marks NLPrivate incomparable-by-value for maps; unhashable is the
    # Python equivalent and keeps private keys out of dict keys and sets.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "NLPrivate(<redacted>)"

    __str__ = __repr__


class NodePublic:
    """A node (WireGuard) public key: 32 raw bytes."""

    __slots__ = ("_raw",)
    _raw: bytes

    def __init__(self, raw: bytes) -> None:
        """Wrap 32 raw node-key bytes."""
        object.__setattr__(self, "_raw", _check_raw(raw, _NODE_SIZE, "node public key"))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("NodePublic is immutable")

    @classmethod
    def from_text(cls, text: str | bytes) -> NodePublic:
        """Parse ``nodekey:<64 hex digits>``, as Go's ``NodePublic.UnmarshalText``."""
        return cls(_parse_hex_key(text, NODE_PUBLIC_PREFIX, _NODE_SIZE))

    @classmethod
    def from_binary(cls, data: bytes) -> NodePublic:
        """Parse Go's binary form ``b"np" + raw`` (``UnmarshalBinary``).

        As in Go, the prefix is checked before the length.
        """
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"node public key: expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data.startswith(NODE_PUBLIC_BINARY_PREFIX):
            raise DecodeError("missing/incorrect type prefix np")
        want = len(NODE_PUBLIC_BINARY_PREFIX) + _NODE_SIZE
        if len(data) != want:
            raise DecodeError(f"incorrect len for NodePublic ({len(data)} != {want})")
        return cls(data[len(NODE_PUBLIC_BINARY_PREFIX) :])

    @property
    def raw(self) -> bytes:
        """The 32 raw key bytes."""
        return self._raw

    def text(self) -> str:
        """Return ``nodekey:<lower-case hex>`` (Go's ``MarshalText`` / ``String``)."""
        return NODE_PUBLIC_PREFIX + self._raw.hex()

    def binary(self) -> bytes:
        """Return Go's ``MarshalBinary`` form: ``b"np"`` followed by the 32 raw bytes."""
        return NODE_PUBLIC_BINARY_PREFIX + self._raw

    def short_string(self) -> str:
        """Return Go's ``ShortString``: ``[`` + first 5 base64 characters + ``]``.

        The all-zero key gives the empty string, as in Go.
        """
        if self.is_zero():
            return ""
        return "[" + base64.b64encode(self._raw[:4]).decode("ascii")[:5] + "]"

    def is_zero(self) -> bool:
        """Report whether every byte is zero (Go's ``IsZero``)."""
        return self._raw == bytes(_NODE_SIZE)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NodePublic):
            return NotImplemented
        return self._raw == other._raw

    def __lt__(self, other: NodePublic) -> bool:
        """Order by raw bytes, as Go's ``Less``/``Compare``."""
        return self._raw < other._raw

    def __hash__(self) -> int:
        return hash((NodePublic, self._raw))

    def __repr__(self) -> str:
        return f"NodePublic({self.text()})"

    __str__ = text
