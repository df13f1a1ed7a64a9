"""Pre-signed auth keys: Tailscale's wrapped auth-key format, both directions.

A tailnet-lock signer can pre-sign an auth key so that the node that later
uses it is admitted without another signing step. The signer makes a fresh
Ed25519 key pair, signs its public half with a credential signature, and
appends both to the auth key::

    <authkey>--TL<base64(credential signature CBOR)>-<base64(64-byte private key)>

(standard base64 alphabet, no padding). The node splits this apart, signs
its own node key with the private key (a rotation signature wrapping the
credential) and presents that to the control plane.

The private key in a wrapped auth key is a secret: it is never logged, and
:class:`WrappedAuthKey` hides it from ``repr``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from tka import ed25519
from tka.errors import DecodeError
from tka.sig import NodeKeySignature, sign_credential

__all__ = ["WrappedAuthKey", "decode_wrapped_authkey", "wrap_authkey"]

_MARKER = "--TL"


@dataclass(frozen=True)
class WrappedAuthKey:
    """The parts of a (possibly) wrapped auth key (Tailscale's ``DecodeWrappedAuthkey``)."""

    auth_key: str
    """The auth key to send to the control plane (the input itself when not wrapped)."""
    is_wrapped: bool
    signature: NodeKeySignature | None = None
    """The credential signature, when wrapped."""
    private_key: bytes | None = field(default=None, repr=False)
    """The 64-byte Ed25519 private key that may sign a node key, when wrapped."""
    problems: tuple[str, ...] = ()
    """Why a string containing the wrap marker was not taken as wrapped."""


def _raw_b64(text: str) -> bytes:
    # Go's RawStdEncoding: standard alphabet, no padding, newlines ignored.
    text = text.replace("\r", "").replace("\n", "")
    if "=" in text or len(text) % 4 == 1:
        raise DecodeError("illegal base64 data")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("illegal base64 data") from None


def decode_wrapped_authkey(text: str) -> WrappedAuthKey:
    """Split a wrapped auth key into its parts; anything malformed is not wrapped.

    As in Tailscale, a string that looks wrapped but does not decode is
    returned whole as the auth key, with the reason in ``problems``.
    """
    auth_key, sep, suffix = text.partition(_MARKER)
    if not sep:
        return WrappedAuthKey(text, False)
    sig_part, sep, priv_part = suffix.partition("-")
    if not sep:
        return WrappedAuthKey(text, False, problems=("did not find delimiter",))
    try:
        raw_sig = _raw_b64(sig_part)
    except DecodeError as exc:
        return WrappedAuthKey(text, False, problems=(f"signature decode: {exc}",))
    try:
        raw_priv = _raw_b64(priv_part)
    except DecodeError:
        return WrappedAuthKey(text, False, problems=("private key decode: illegal base64 data",))
    try:
        sig = NodeKeySignature.from_bytes(raw_sig)
    except DecodeError as exc:
        return WrappedAuthKey(text, False, problems=(f"signature: {exc}",))
    return WrappedAuthKey(auth_key, True, sig, raw_priv)


def wrap_authkey(auth_key: str, signer_private: bytes) -> str:
    """Pre-sign *auth_key* with the tailnet-lock key *signer_private* (seed or 64 bytes).

    Generates a fresh credential key pair each time; the result contains its
    private half and must be handled as a secret.
    """
    seed = ed25519.generate_seed()
    cred_public = ed25519.public_from_seed(seed)
    sig = sign_credential(signer_private, cred_public)

    def enc(b: bytes) -> str:
        return base64.b64encode(b).decode("ascii").rstrip("=")

    return f"{auth_key}{_MARKER}{enc(sig.to_bytes())}-{enc(seed + cred_public)}"
