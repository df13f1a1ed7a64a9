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
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Final

from tka import codec, ed25519
from tka._schema import Field, fill_bytes, fill_struct, fill_uint
from tka.aum import blake2s
from tka.errors import DecodeError, NotAuthorized, UsageError, ValidationError
from tka.key import KEY_KIND_25519, Key
from tka.limits import MAX_PREV_NODE_KEYS
from tka.state import State

__all__ = [
    "NODE_KEY_BINARY_PREFIX",
    "NodeKeySignature",
    "RotationDetails",
    "SigKind",
    "authorize_node_key",
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
        """Decode strictly (Tailscale's ``NodeKeySignature.Unserialize``)."""
        return cls.from_cbor_obj(codec.parse(data))

    @classmethod
    def from_cbor_obj(cls, node: Any, where: str = "node-key signature") -> NodeKeySignature:
        """Fill a signature from a parsed CBOR node with Go's decoding rules."""
        return cls(**fill_struct(node, _FIELDS, where))

    def to_cbor_obj(self, with_signature: bool = True) -> dict[int, Any]:
        """The value handed to the canonical encoder."""
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

    @cached_property
    def canonical(self) -> bytes:
        """The canonical serialization."""
        return codec.encode(self.to_cbor_obj())

    def to_bytes(self) -> bytes:
        """Serialize canonically (Tailscale's ``Serialize``)."""
        return self.canonical

    @cached_property
    def sig_hash(self) -> bytes:
        """BLAKE2s-256 of the canonical form without this level's signature."""
        return blake2s(codec.encode(self.to_cbor_obj(with_signature=False)))

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
            if sig.sig_kind != SigKind.ROTATION:
                return None
            sig = sig.nested
        return None

    def authorizing_key_id(self) -> bytes:
        """The ID of the trusted key at the root of this signature (unverified)."""
        sig = self
        # Bounded by the CBOR nesting cap, but a value built in memory is not.
        while True:
            if sig.sig_kind in (SigKind.DIRECT, SigKind.CREDENTIAL):
                if not sig.key_id:
                    raise NotAuthorized("invalid signature: no key ID present")
                return sig.key_id
            if sig.sig_kind == SigKind.ROTATION:
                if sig.nested is None:
                    raise NotAuthorized("invalid signature: rotation without a nested signature")
                sig = sig.nested
                continue
            raise NotAuthorized(f"unhandled signature type: {sig_kind_name(sig.sig_kind)}")

    # -- verification ------------------------------------------------------

    def verify(self, node_key: bytes | None, key: Key) -> None:
        """Check this signature admits *node_key* (raw 32 bytes) under trusted *key*.

        Raises :class:`~tka.errors.NotAuthorized` with the reason otherwise.
        *node_key* is ignored for credential signatures, which carry none.
        """
        sig = self
        depth = 0
        while True:
            where = "nested: " * depth
            if sig.sig_kind != SigKind.CREDENTIAL:
                expected = NODE_KEY_BINARY_PREFIX + (node_key or bytes(32))
                if expected != sig.pubkey:
                    raise NotAuthorized(f"{where}signature does not authorize the node key")
            if sig.sig_kind == SigKind.ROTATION:
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
                if nested.sig_kind != SigKind.CREDENTIAL:
                    try:
                        node_key = node_key_from_binary(nested.pubkey or b"")
                    except DecodeError as exc:
                        raise NotAuthorized(f"{where}nested pubkey: {exc}") from None
                else:
                    node_key = None
                sig = nested
                depth += 1
                continue
            if sig.sig_kind in (SigKind.DIRECT, SigKind.CREDENTIAL):
                if sig.nested is not None:
                    raise NotAuthorized(
                        f"{where}{sig.kind_name} signatures cannot nest another signature"
                    )
                if key.kind != KEY_KIND_25519:
                    raise NotAuthorized(f"{where}unhandled key type {key.kind}")
                public = key.public or b""
                if len(public) != ed25519.PUBLIC_KEY_SIZE:
                    raise NotAuthorized(f"{where}ed25519 key has wrong length: {len(public)}")
                if not ed25519.verify_zip215(public, sig.sig_hash, sig.signature or b""):
                    raise NotAuthorized(f"{where}invalid signature")
                return
            raise NotAuthorized(f"{where}unhandled signature type: {sig.kind_name}")

    def rotation_details(self) -> RotationDetails | None:
        """For a rotation signature, the previous node keys and the initial signature.

        Returns ``None`` for other kinds. Call only after verification.
        """
        if self.sig_kind != SigKind.ROTATION:
            return None
        prev: list[bytes] = []
        nested = self.nested
        while nested is not None:
            if nested.pubkey:
                try:
                    prev.append(node_key_from_binary(nested.pubkey))
                except DecodeError as exc:
                    raise NotAuthorized(f"nested pubkey: {exc}") from None
            if nested.sig_kind != SigKind.ROTATION:
                break
            nested = nested.nested
        return RotationDetails(tuple(prev), nested)

    def with_signature(self, signature: bytes) -> NodeKeySignature:
        """A copy carrying *signature* (caches are not carried over)."""
        return replace(self, signature=signature)


def _fill_nested(node: Any, where: str) -> NodeKeySignature | None:
    return None if node is None else NodeKeySignature.from_cbor_obj(node, where)


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
    if decoded.sig_kind == SigKind.CREDENTIAL:
        raise NotAuthorized("credential signatures cannot authorize nodes on their own")
    key_id = decoded.authorizing_key_id()
    try:
        key = state.get_key(key_id)
    except ValidationError as exc:
        raise NotAuthorized(f"key: {exc}") from None
    if key is None:
        raise NotAuthorized("key: the signing key is not trusted by the authority")
    decoded.verify(node_key, key)
    return decoded.rotation_details()
