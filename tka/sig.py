"""Node-key signatures: twin of Tailscale's ``tka/sig.go``.

A node-key signature (NKS) admits a node key into a locked tailnet. Three kinds:

* **direct** (1): a trusted key signs the node key;
* **rotation** (2): the node's rotation key signs a new node key, wrapping the
  signature that admitted the previous one (``nested``);
* **credential** (3): a trusted key signs a throw-away public key, whose
  holder may later wrap it in a rotation signature for any node key (the
  pre-signed auth-key flow). A credential alone admits nothing.

CBOR layout (map with integer keys; everything but the kind omitted when empty)::

    1 sig_kind  2 pubkey ("np" + 32-byte node key)  3 key_id  4 signature
    5 nested    6 wrapping_pubkey

Verification rules differ by place, exactly as in Tailscale: the outer
signature of a rotation is checked with Go's standard-library Ed25519 rules;
direct and credential signatures with ZIP-215 (see :mod:`tka.ed25519`).
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import cbor2

from tka import codec, ed25519
from tka._cache import cached
from tka._schema import Field, fill_bytes, fill_struct, fill_uint, key_shapes
from tka.errors import DecodeError, NotAuthorized, UsageError, ValidationError
from tka.key import KEY_KIND_25519, Key
from tka.limits import CBOR_MAX_NESTED_LEVELS, MAX_PREV_NODE_KEYS
from tka.state import State

__all__ = [
    "NODE_KEY_BINARY_PREFIX",
    "NodeKeySignature",
    "RotationDetails",
    "SigKind",
    "authorize_node_key",
    "direct_layout_fields",
    "node_key_binary",
    "node_key_from_binary",
    "resign_nks",
    "sig_kind_name",
    "sign_by_credential",
    "sign_credential",
    "sign_direct",
    "sign_rotation",
]

NODE_KEY_BINARY_PREFIX: Final = b"np"


class SigKind(enum.IntEnum):
    """Kinds of node-key signature."""

    INVALID = 0
    DIRECT = 1
    ROTATION = 2
    CREDENTIAL = 3


_KIND_NAMES: Final = {0: "invalid", 1: "direct", 2: "rotation", 3: "credential"}
# The kinds as plain ints for the hot paths (comparing to an IntEnum member
# looks it up on the enum class every time).
_DIRECT: Final = 1
_ROTATION: Final = 2
_CREDENTIAL: Final = 3
_head: Final = codec.head_size
_blake2s: Final = hashlib.blake2s
_loads: Final = cbor2.loads
_dumps: Final = cbor2.dumps
_BYTES: Final = tuple(bytes((i,)) for i in range(256))


def _pair_size(n: int) -> int:
    """Bytes of a map pair with a one-byte key and a byte string of length *n*."""
    if n < 24:
        return 2 + n
    if n < 0x100:
        return 3 + n
    return 1 + _head(n) + n


def sig_kind_name(kind: int) -> str:
    """Go's ``SigKind.String()``."""
    return _KIND_NAMES.get(kind, f"Sig?<{kind}>")


def node_key_binary(raw: bytes) -> bytes:
    """The binary form of a 32-byte node key that signatures carry: ``b"np" + raw``."""
    if len(raw) != 32:
        raise UsageError(f"node key is {len(raw)} bytes, want 32")
    return NODE_KEY_BINARY_PREFIX + raw


def node_key_from_binary(data: bytes) -> bytes:
    """Parse the binary form of a node key back to its 32 raw bytes."""
    if not data.startswith(NODE_KEY_BINARY_PREFIX):
        raise DecodeError("node key: missing or incorrect type prefix 'np'")
    if len(data) != 34:
        raise DecodeError(f"node key: binary form is {len(data)} bytes, want 34")
    return data[2:]


@dataclass(frozen=True)
class RotationDetails:
    """What a verified rotation signature says about the node's history."""

    prev_node_keys: tuple[bytes, ...]
    """Raw 32-byte node keys this node held before, newest first."""
    initial_sig: NodeKeySignature | None
    """The direct or credential signature at the root of the chain."""


@dataclass(frozen=True)
class NodeKeySignature:
    """A node-key signature. Immutable; ``None`` means absent."""

    sig_kind: int
    pubkey: bytes | None = None
    key_id: bytes | None = None
    signature: bytes | None = None
    nested: NodeKeySignature | None = None
    wrapping_pubkey: bytes | None = None

    # -- wire form -------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes) -> NodeKeySignature:
        """Decode strictly (Tailscale's ``NodeKeySignature.Unserialize``).

        Canonical bytes take the same provably equivalent fast path as
        :meth:`tka.aum.AUM.from_bytes`; anything else the strict parser.
        """
        if type(data) is bytes:
            fast = _from_canonical(data)
            if fast is not None:
                return fast
        return cls.from_cbor_obj(codec.parse(data))

    @classmethod
    def from_cbor_obj(cls, node: Any, where: str = "node-key signature") -> NodeKeySignature:
        """Fill a signature from a parsed CBOR node with Go's decoding rules."""
        return cls(**fill_struct(node, _FIELDS, where))

    def to_cbor_obj(self, with_signature: bool = True) -> dict[int, Any]:
        """The value handed to the canonical encoder (keys in canonical order)."""
        out: dict[int, Any] = {1: self.sig_kind}
        if self.pubkey:
            out[2] = self.pubkey
        if self.key_id:
            out[3] = self.key_id
        if with_signature and self.signature:
            out[4] = self.signature
        if self.nested is not None:
            out[5] = self.nested.to_cbor_obj()
        if self.wrapping_pubkey:
            out[6] = self.wrapping_pubkey
        return out

    @cached
    def canonical(self) -> bytes:
        """The canonical serialization."""
        return codec.encode_ordered(self.to_cbor_obj())

    def to_bytes(self) -> bytes:
        """Serialize canonically (Tailscale's ``Serialize``)."""
        return self.canonical

    @cached
    def sig_hash(self) -> bytes:
        """BLAKE2s-256 of the canonical form without this level's signature."""
        c = self.canonical
        start, end = self._signature_span()
        if start == end:
            return _blake2s(c).digest()
        # Dropping one pair of a canonical map leaves the other pairs' bytes
        # and order as they are; only the pair count in the head changes,
        # and with at most 6 pairs the head is the single byte 0xa0 + count.
        head = _BYTES[c[0] - 1]
        if end == len(c):
            return _blake2s(head + c[1:start]).digest()
        return _blake2s(head + c[1:start] + c[end:]).digest()

    def _signature_span(self) -> tuple[int, int]:
        """Where the signature pair (key 4) is in :attr:`canonical`: ``(start, end)``.

        ``start == end`` when there is no signature. Computed from the field
        values: keys 1-3 come first in canonical order, each key is one byte.
        """
        # Each present pair is a one-byte key, the value's head, the value;
        # the common sizes are written out (this runs once or twice per level
        # of every signature checked).
        pos = 3 if self.sig_kind < 24 else 2 + _head(self.sig_kind)  # map head, key 1, kind
        if self.pubkey:
            n = len(self.pubkey)
            pos += n + 3 if 24 <= n < 256 else _pair_size(n)
        if self.key_id:
            n = len(self.key_id)
            pos += n + 3 if 24 <= n < 256 else _pair_size(n)
        if not self.signature:
            return pos, pos
        n = len(self.signature)
        return pos, pos + (n + 3 if 24 <= n < 256 else _pair_size(n))

    @property
    def kind_name(self) -> str:
        """Go's name for this signature's kind."""
        return sig_kind_name(self.sig_kind)

    # -- unverified accessors ---------------------------------------------

    def wrapping_public(self) -> bytes | None:
        """The key that must sign a signature wrapping this one, if any.

        A rotation level that omits it inherits the one nested inside it.
        Not verified: only trust it after :meth:`authorizes` succeeded.
        """
        sig: NodeKeySignature | None = self
        while sig is not None:
            if sig.wrapping_pubkey:
                return sig.wrapping_pubkey
            if sig.sig_kind != _ROTATION:
                return None
            sig = sig.nested
        return None

    def authorizing_key_id(self) -> bytes:
        """The ID of the trusted key at the root of this signature (unverified)."""
        sig = self
        # Bounded by the CBOR nesting cap, but a value built in memory is not.
        while True:
            kind = sig.sig_kind
            if kind in (_DIRECT, _CREDENTIAL):
                if not sig.key_id:
                    raise NotAuthorized("invalid signature: no key ID present")
                return sig.key_id
            if kind == _ROTATION:
                if sig.nested is None:
                    raise NotAuthorized("invalid signature: rotation without a nested signature")
                sig = sig.nested
                continue
            raise NotAuthorized(f"unhandled signature type: {sig_kind_name(sig.sig_kind)}")

    # -- verification ------------------------------------------------------

    def verify(
        self,
        node_key: bytes | None,
        key: Key,
        verify_zip215: Callable[[bytes, bytes, bytes], bool] = ed25519.verify_zip215,
    ) -> None:
        """Check this signature admits *node_key* (raw 32 bytes) under trusted *key*.

        Raises :class:`~tka.errors.NotAuthorized` with the reason otherwise.
        *node_key* is ignored for credential signatures, which carry none.
        *verify_zip215* is the ZIP-215 check to use (the same verdict in
        another form, e.g. :func:`tka.ed25519.verify_zip215_threaded`).
        """
        sig = self
        depth = 0
        while True:
            where = "nested: " * depth
            kind = sig.sig_kind
            if kind != _CREDENTIAL:
                expected = NODE_KEY_BINARY_PREFIX + (node_key or bytes(32))
                if expected != sig.pubkey:
                    raise NotAuthorized(f"{where}signature does not authorize the node key")
            if kind == _ROTATION:
                nested = sig.nested
                if nested is None:
                    raise NotAuthorized(f"{where}rotation signature has no nested signature")
                verify_pub = nested.wrapping_public()
                if verify_pub is None:
                    raise NotAuthorized(f"{where}missing rotation key")
                if len(verify_pub) != ed25519.PUBLIC_KEY_SIZE:
                    raise NotAuthorized(f"{where}bad rotation key length: {len(verify_pub)}")
                # Tailscale checks the rotation wrapper with Go's stdlib rules.
                if not ed25519.verify_go_stdlib(verify_pub, sig.sig_hash, sig.signature or b""):
                    raise NotAuthorized(f"{where}invalid signature")
                if nested.sig_kind != _CREDENTIAL:
                    try:
                        node_key = node_key_from_binary(nested.pubkey or b"")
                    except DecodeError as exc:
                        raise NotAuthorized(f"{where}nested pubkey: {exc}") from None
                else:
                    node_key = None
                sig = nested
                depth += 1
                continue
            if kind in (_DIRECT, _CREDENTIAL):
                if sig.nested is not None:
                    raise NotAuthorized(
                        f"{where}{sig.kind_name} signatures cannot nest another signature"
                    )
                if key.kind != KEY_KIND_25519:
                    raise NotAuthorized(f"{where}unhandled key type {key.kind}")
                public = key.public or b""
                if len(public) != ed25519.PUBLIC_KEY_SIZE:
                    raise NotAuthorized(f"{where}ed25519 key has wrong length: {len(public)}")
                if not verify_zip215(public, sig.sig_hash, sig.signature or b""):
                    raise NotAuthorized(f"{where}invalid signature")
                return
            raise NotAuthorized(f"{where}unhandled signature type: {sig.kind_name}")

    def rotation_details(self) -> RotationDetails | None:
        """For a rotation signature, the previous node keys and the initial signature.

        Returns ``None`` for other kinds. Call only after verification.
        """
        if self.sig_kind != _ROTATION:
            return None
        prev: list[bytes] = []
        nested = self.nested
        while nested is not None:
            if nested.pubkey:
                try:
                    prev.append(node_key_from_binary(nested.pubkey))
                except DecodeError as exc:
                    raise NotAuthorized(f"nested pubkey: {exc}") from None
            if nested.sig_kind != _ROTATION:
                break
            nested = nested.nested
        return RotationDetails(tuple(prev), nested)

    def with_signature(self, signature: bytes) -> NodeKeySignature:
        """A copy carrying *signature* (caches are not carried over)."""
        return replace(self, signature=signature)


def _fill_nested(node: Any, where: str) -> NodeKeySignature | None:
    return None if node is None else NodeKeySignature.from_cbor_obj(node, where)


# Only the kind is always written; the rest when set (non-empty).
_SHAPES: Final = key_shapes((1,), (2, 3, 4, 5, 6))
_new: Final = object.__new__
_setattr: Final = object.__setattr__


def _from_plain(node: Any, depth: int) -> NodeKeySignature | None:
    """The fast path's narrow filler (rules at the end of :mod:`tka._schema`).

    *depth* is the map's nesting level as the strict parser counts it (the
    outermost map is level 1), so the nesting cap is enforced here too.
    Written out flat: this runs for every signature a control plane checks.
    """
    if depth > CBOR_MAX_NESTED_LEVELS or type(node) is not dict:
        return None
    keys = tuple(node)
    if keys not in _SHAPES:
        return None
    for k in keys:
        if type(k) is not int:  # True == 1 and 2.0 == 2 passed the membership test
            return None
    kind = node[1]
    if type(kind) is not int or not 0 <= kind <= 0xFF:
        return None
    # Present byte fields must be non-empty (the encoder omits empty ones).
    pubkey = key_id = signature = wrapping = nested = None
    if 2 in node:
        pubkey = node[2]
        if type(pubkey) is not bytes or not pubkey:
            return None
    if 3 in node:
        key_id = node[3]
        if type(key_id) is not bytes or not key_id:
            return None
    if 4 in node:
        signature = node[4]
        if type(signature) is not bytes or not signature:
            return None
    if 5 in node:
        nested = _from_plain(node[5], depth + 1)
        if nested is None:
            return None
    if 6 in node:
        wrapping = node[6]
        if type(wrapping) is not bytes or not wrapping:
            return None
    sig: NodeKeySignature = _new(NodeKeySignature)
    # The generated __init__ only assigns the fields (there is no
    # __post_init__); filling the instance dictionary at once is the same.
    _setattr(
        sig,
        "__dict__",
        {
            "sig_kind": kind,
            "pubkey": pubkey,
            "key_id": key_id,
            "signature": signature,
            "nested": nested,
            "wrapping_pubkey": wrapping,
        },
    )
    return sig


# The byte layout of a direct signature as Tailscale's nodes make them: a
# node key (34 bytes with its "np" prefix), a 32-byte key ID, a 64-byte
# signature, and optionally a 32-byte rotation key. Every head here is the
# minimal one (a byte string of 24-255 bytes has the head 0x58 <length>) and
# the keys come in canonical order, so bytes that match the layout are the
# canonical encoding of exactly those fields: no CBOR round trip is needed.
_DIRECT_SIZES: Final = (142, 177)
_DIRECT_HEAD: Final = b"\x01\x01\x02\x58\x22"  # key 1: kind 1; key 2: 34-byte string
_DIRECT_KEY_ID: Final = b"\x03\x58\x20"  # at 40: key 3, 32-byte string
_DIRECT_SIG: Final = b"\x04\x58\x40"  # at 75: key 4, 64-byte string
_DIRECT_WRAPPING: Final = b"\x06\x58\x20"  # at 142: key 6, 32-byte string


def direct_layout_fields(
    data: bytes,
) -> tuple[bytes, bytes, bytes, bytes | None, bytes] | None:
    """``(pubkey, key_id, signature, wrapping_pubkey, sig_hash)`` of a direct signature in
    the usual layout, read by slicing; ``None`` for any other bytes.

    For callers that check many signatures and need only these fields:
    what :meth:`NodeKeySignature.from_bytes` would decode (the bytes are its
    canonical encoding), without building the object.
    """
    n = len(data)
    if (
        n not in _DIRECT_SIZES
        or data[1:6] != _DIRECT_HEAD
        or data[40:43] != _DIRECT_KEY_ID
        or data[75:78] != _DIRECT_SIG
    ):
        return None
    # The signature pair is bytes 75-141; without it the map has one pair
    # less (head 0xa3 or 0xa4): the bytes sig_hash hashes.
    if n == 142:
        if data[0] != 0xA4:
            return None
        wrapping = None
        unsigned = b"\xa3" + data[1:75]
    elif data[0] != 0xA5 or data[142:145] != _DIRECT_WRAPPING:
        return None
    else:
        wrapping = data[145:]
        unsigned = b"\xa4" + data[1:75] + data[142:]
    return data[6:40], data[43:75], data[78:142], wrapping, _blake2s(unsigned).digest()


def _from_direct_layout(data: bytes) -> NodeKeySignature | None:
    """A direct signature in the usual layout, decoded by slicing; else ``None``."""
    fields = direct_layout_fields(data)
    if fields is None:
        return None
    pubkey, key_id, signature, wrapping, sig_hash = fields
    sig: NodeKeySignature = _new(NodeKeySignature)
    _setattr(
        sig,
        "__dict__",
        {
            "sig_kind": _DIRECT,
            "pubkey": pubkey,
            "key_id": key_id,
            "signature": signature,
            "nested": None,
            "wrapping_pubkey": wrapping,
            "canonical": data,
            # Computed here since a signature is decoded to be verified.
            "sig_hash": sig_hash,
        },
    )
    return sig


def _from_canonical(data: bytes) -> NodeKeySignature | None:
    """The fast path of :meth:`NodeKeySignature.from_bytes`, or ``None`` to decode strictly."""
    sig = _from_direct_layout(data)
    if sig is not None:
        return sig
    # codec.loads_plain and codec.encode_ordered, minus the function calls:
    # a control plane decodes a signature for every node it checks.
    try:
        t = _loads(data)
    except Exception:
        return None  # the strict parser gives the authoritative error
    sig = _from_plain(t, 1)
    if sig is None or _dumps(t) != data:
        return None
    # Proven canonical by the check above: prime the cache, and that of every
    # nested level, whose canonical bytes are a slice of their parent's (the
    # nested map is the value of key 5, followed only by the key-6 pair).
    level = sig
    level.__dict__["canonical"] = data
    while level.nested is not None:
        c = level.__dict__["canonical"]
        start = level._signature_span()[1] + 1
        end = len(c)
        if level.wrapping_pubkey:
            n = len(level.wrapping_pubkey)
            end -= 1 + codec.head_size(n) + n
        level = level.nested
        level.__dict__["canonical"] = c[start:end]
    return sig


_FIELDS: Final[dict[int, Field]] = {
    1: ("sig_kind", lambda n, w: fill_uint(n, 8, w), 0),
    2: ("pubkey", fill_bytes, None),
    3: ("key_id", fill_bytes, None),
    4: ("signature", fill_bytes, None),
    5: ("nested", _fill_nested, None),
    6: ("wrapping_pubkey", fill_bytes, None),
}


# -- making signatures ------------------------------------------------------

Signer = Callable[[bytes], bytes]
"""Signs a 32-byte digest with an Ed25519 key; returns the 64-byte signature."""


def _signed(sig: NodeKeySignature, private: bytes) -> NodeKeySignature:
    return sig.with_signature(ed25519.sign(private, sig.sig_hash))


def sign_direct(
    private: bytes, node_key: bytes, rotation_public: bytes | None = None
) -> NodeKeySignature:
    """A direct signature by the tailnet-lock key *private* over *node_key* (raw 32 bytes).

    *rotation_public*, when given, is the node's rotation key, which may later
    sign rotations to new node keys.
    """
    public = ed25519.public_from_private(private)
    sig = NodeKeySignature(
        SigKind.DIRECT,
        pubkey=node_key_binary(node_key),
        key_id=public,
        wrapping_pubkey=rotation_public or None,
    )
    return _signed(sig, private)


def sign_credential(private: bytes, credential_public: bytes) -> NodeKeySignature:
    """A credential signature delegating signing power to *credential_public*."""
    if len(credential_public) != ed25519.PUBLIC_KEY_SIZE:
        raise UsageError(f"credential key is {len(credential_public)} bytes, want 32")
    sig = NodeKeySignature(
        SigKind.CREDENTIAL,
        key_id=ed25519.public_from_private(private),
        wrapping_pubkey=credential_public,
    )
    return _signed(sig, private)


def sign_rotation(
    rotation_private: bytes, node_key: bytes, nested: NodeKeySignature
) -> NodeKeySignature:
    """A rotation signature admitting *node_key*, wrapping the previous signature *nested*."""
    sig = NodeKeySignature(SigKind.ROTATION, pubkey=node_key_binary(node_key), nested=nested)
    return _signed(sig, rotation_private)


def sign_by_credential(
    credential_private: bytes, wrapped: NodeKeySignature, node_key: bytes
) -> NodeKeySignature:
    """Tailscale's ``SignByCredential``: wrap a credential signature for *node_key*.

    *credential_private* is the 64-byte private key from a wrapped auth key.
    """
    if len(credential_private) != 64:
        raise UsageError(f"credential private key is {len(credential_private)} bytes, want 64")
    if wrapped.sig_kind != SigKind.CREDENTIAL:
        raise UsageError(
            f"wrapped signature must be a credential, got {sig_kind_name(wrapped.sig_kind)}"
        )
    return sign_rotation(credential_private, node_key, wrapped)


def _trim_rotation_chain(sig: NodeKeySignature, private: bytes) -> NodeKeySignature:
    """Rebuild a rotation chain longer than 15 node keys from its 14 newest ones.

    Deeper chains would hit the CBOR nesting cap (16) after one more rotation
    and lock the node out, so Tailscale re-signs a short chain with the
    node's rotation key on top of the original signature.
    """
    if sig.sig_kind != SigKind.ROTATION:
        return sig
    prev = [sig.pubkey or b""]
    nested = sig.nested
    while nested is not None:
        if nested.pubkey:
            prev.append(nested.pubkey)
        if nested.sig_kind != SigKind.ROTATION:
            break
        nested = nested.nested
    if len(prev) <= MAX_PREV_NODE_KEYS:
        return sig
    result = nested
    for pubkey in reversed(prev[: MAX_PREV_NODE_KEYS - 1]):
        result = _signed(NodeKeySignature(SigKind.ROTATION, pubkey=pubkey, nested=result), private)
    assert result is not None
    return result


def resign_nks(private: bytes, node_key: bytes, old_sig: bytes) -> bytes:
    """Tailscale's ``ResignNKS``: re-sign *old_sig* for the rotated *node_key*.

    Returns *old_sig* unchanged when it already admits *node_key*; otherwise a
    rotation signature by *private* (the node's rotation key) wrapping the old
    chain, trimmed so it never holds more than 15 previous node keys.
    """
    try:
        old = NodeKeySignature.from_bytes(old_sig)
    except DecodeError as exc:
        raise DecodeError(f"decoding node-key signature: {exc}") from None
    nk = node_key_binary(node_key)
    if old.pubkey == nk:
        return old_sig
    nested = _trim_rotation_chain(old, private)
    return sign_rotation(private, node_key, nested).to_bytes()


# -- admission -----------------------------------------------------------------


def authorize_node_key(
    state: State, node_key: bytes, signature: bytes | NodeKeySignature
) -> RotationDetails | None:
    """Tailscale's ``NodeKeyAuthorizedWithDetails`` against the trusted keys of *state*.

    *signature* is the serialized NKS (untrusted bytes) or a decoded one.
    Returns the rotation details for a rotation signature, ``None`` for a
    direct one; raises :class:`~tka.errors.NotAuthorized` with the reason
    when the node is not admitted.
    """
    if isinstance(signature, NodeKeySignature):
        decoded = signature
    else:
        try:
            decoded = NodeKeySignature.from_bytes(signature)
        except DecodeError as exc:
            raise NotAuthorized(f"unserialize: {exc}") from None
    if decoded.sig_kind == _DIRECT and decoded.nested is None and decoded.key_id:
        _authorize_direct(state, node_key, decoded)
        return None
    if decoded.sig_kind == _CREDENTIAL:
        raise NotAuthorized("credential signatures cannot authorize nodes on their own")
    key = _trusted_key(state, decoded.authorizing_key_id())
    decoded.verify(node_key, key)
    return decoded.rotation_details()


def _trusted_key(state: State, key_id: bytes) -> Key:
    """The trusted key with this ID, as ``NodeKeyAuthorized`` looks it up."""
    try:
        key = state.get_key(key_id)
    except ValidationError as exc:
        raise NotAuthorized(f"key: {exc}") from None
    if key is None:
        raise NotAuthorized("key: the signing key is not trusted by the authority")
    return key


def _authorize_direct(state: State, node_key: bytes, sig: NodeKeySignature) -> None:
    """:func:`authorize_node_key` of a direct signature that names a key and nests none.

    The same checks in the same order, with the same messages, as the
    general path (key lookup, then :meth:`NodeKeySignature.verify`), written
    out: it is what a control plane asks for nearly every node, and the
    steps the general path takes for other kinds cost as much as a tenth of
    the verification itself.
    """
    key = _trusted_key(state, sig.key_id or b"")
    if sig.pubkey != NODE_KEY_BINARY_PREFIX + (node_key or bytes(32)):
        raise NotAuthorized("signature does not authorize the node key")
    if key.kind != KEY_KIND_25519:
        raise NotAuthorized(f"unhandled key type {key.kind}")
    public = key.public or b""
    if len(public) != ed25519.PUBLIC_KEY_SIZE:
        raise NotAuthorized(f"ed25519 key has wrong length: {len(public)}")
    if not ed25519.verify_zip215(public, sig.sig_hash, sig.signature or b""):
        raise NotAuthorized("invalid signature")
