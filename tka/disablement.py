"""Disablement secrets, the values derived from them, and their CLI text forms.

A tailnet-lock authority stores *disablement values*: Argon2i digests of
secrets handed to the administrator at ``tailscale lock init``. Presenting a
secret whose digest is stored shuts tailnet lock down
(``Authority.ValidDisablement``). This module provides the derivation
(:func:`disablement_kdf`, identical to Go's ``tka.DisablementKDF``), the check,
and the text forms the ``tailscale lock`` CLI prints and parses:

* ``disablement:<hex>`` -- a value (``lock disablement-kdf`` prints lower-case hex);
* ``disablement-secret:<hex>`` -- a secret (``lock init`` prints upper-case hex).

Go's CLI parses both prefixes with one routine (``parseTLArgs``) and does not
care which of the two an argument uses: ``lock init`` takes a
``disablement-secret:`` argument as a *value*, and ``lock disable`` takes a
``disablement:`` argument as its *secret*. :func:`parse_value` and
:func:`parse_secret` reproduce that by default; pass ``strict=True`` to insist
on the matching prefix.

No error raised here ever contains a secret or part of one.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from typing import Final

from argon2.low_level import Type, hash_secret_raw

from tka.errors import DecodeError, UsageError

__all__ = [
    "KDF_MEMORY_KIB",
    "KDF_PARALLELISM",
    "KDF_SALT",
    "KDF_TIME_COST",
    "SECRET_PREFIX",
    "SECRET_SIZE",
    "VALUE_PREFIX",
    "VALUE_SIZE",
    "check_disablement",
    "disablement_kdf",
    "format_secret",
    "format_value",
    "generate_secret",
    "parse_secret",
    "parse_value",
]

#: Size in bytes of the secrets ``tailscale lock init`` generates.
SECRET_SIZE: Final = 32
#: Size in bytes of a disablement value (the KDF output).
VALUE_SIZE: Final = 32
#: Argon2 salt Tailscale uses for every disablement secret.
KDF_SALT: Final = b"tailscale network-lock disablement salt"
#: Argon2 passes.
KDF_TIME_COST: Final = 4
#: Argon2 memory, in KiB (16 MiB).
KDF_MEMORY_KIB: Final = 16 * 1024
#: Argon2 lanes/threads.
KDF_PARALLELISM: Final = 4

#: Prefix of a disablement value in CLI text.
VALUE_PREFIX: Final = "disablement:"
#: Prefix of a disablement secret in CLI text.
SECRET_PREFIX: Final = "disablement-secret:"

_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")


def _as_bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise UsageError(f"{what} must be bytes, not {type(value).__name__}")
    return bytes(value)


def generate_secret() -> bytes:
    """Return a fresh 32-byte disablement secret from OS randomness."""
    return os.urandom(SECRET_SIZE)


def disablement_kdf(secret: bytes | bytearray | memoryview) -> bytes:
    """Derive the disablement value of *secret* (Go's ``tka.DisablementKDF``).

    Argon2i -- not Argon2id -- version 0x13, 4 passes, 16 MiB, 4 lanes, 32-byte
    output, fixed salt. Any length of secret is accepted, including empty, as
    in Go.
    """
    data = _as_bytes(secret, "disablement secret")
    out: bytes = hash_secret_raw(
        data,
        salt=KDF_SALT,
        time_cost=KDF_TIME_COST,
        memory_cost=KDF_MEMORY_KIB,
        parallelism=KDF_PARALLELISM,
        hash_len=VALUE_SIZE,
        type=Type.I,
    )
    return out


def check_disablement(
    secret: bytes | bytearray | memoryview, values: Sequence[bytes | bytearray | memoryview]
) -> bool:
    """Report whether *secret* derives to one of *values* (``State.checkDisablement``).

    The KDF runs once; its output is compared with every value in constant
    time and the loop never stops early, so timing reveals neither which
    value matched nor how much of one did.
    """
    derived = disablement_kdf(secret)
    found = False
    for candidate in values:
        # Non-short-circuit "or": every candidate is compared whatever happened before.
        found |= hmac.compare_digest(derived, _as_bytes(candidate, "disablement value"))
    return found


def _decode_hex(digits: str) -> bytes | None:
    """Decode like Go's ``hex.DecodeString``: even length, hex digits only, either case."""
    if len(digits) % 2 or not all(c in _HEX_DIGITS for c in digits):
        return None
    return bytes.fromhex(digits)


def _parse(text: object, want_prefix: str, strict: bool, what: str) -> bytes:
    if not isinstance(text, str):
        raise DecodeError(f"{what}: expected text, got {type(text).__name__}")
    prefixes = (want_prefix,) if strict else (VALUE_PREFIX, SECRET_PREFIX)
    if not text.startswith(prefixes):
        expected = " or ".join(repr(p) for p in prefixes)
        raise DecodeError(f"{what}: expected a value with {expected} prefix")
    # Go slices after the first ':' -- which ends either prefix.
    decoded = _decode_hex(text[text.index(":") + 1 :])
    if decoded is None:
        raise DecodeError(f"{what}: not an even number of hex digits")
    return decoded


def format_value(value: bytes) -> str:
    """Return ``disablement:<lower-case hex>``, as ``tailscale lock disablement-kdf`` prints."""
    return VALUE_PREFIX + _as_bytes(value, "disablement value").hex()


def format_secret(secret: bytes) -> str:
    """Return ``disablement-secret:<UPPER-CASE hex>``, as ``tailscale lock init`` prints."""
    return SECRET_PREFIX + _as_bytes(secret, "disablement secret").hex().upper()


def parse_value(text: str, *, strict: bool = False) -> bytes:
    """Parse a disablement value argument as ``tailscale lock init`` does.

    Either prefix is accepted unless *strict*; the hex part may be any even
    length (including empty) in either case. Raises
    :class:`~tka.errors.DecodeError`.
    """
    return _parse(text, VALUE_PREFIX, strict, "disablement value")


def parse_secret(text: str, *, strict: bool = False) -> bytes:
    """Parse a disablement secret argument as ``tailscale lock disable`` does.

    Either prefix is accepted unless *strict*; the hex part may be any even
    length (including empty) in either case. Raises
    :class:`~tka.errors.DecodeError` whose message never includes the input.
    """
    return _parse(text, SECRET_PREFIX, strict, "disablement secret")
