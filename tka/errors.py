"""The one exception hierarchy used across tka.

Every public function that can fail on bad input raises a subclass of
:class:`TKAError`. Messages are lower-case, name the place and the fault, and
never contain secret material (private keys, disablement secrets).

    TKAError
    ├── DecodeError          bytes or text that could not be parsed
    ├── ValidationError      a well-formed value that breaks a static rule
    ├── VerificationError    a signature, hash link or authorization that fails
    │   └── NotAuthorized    a node-key signature that does not admit the node
    ├── StateError           an update that does not apply to the current state
    ├── LimitExceeded        a size or iteration cap was hit
    ├── StorageError         a storage backend failed or holds bad data
    └── UsageError           an API was called with arguments that make no sense
"""

from __future__ import annotations

__all__ = [
    "DecodeError",
    "LimitExceeded",
    "NotAuthorized",
    "StateError",
    "StorageError",
    "TKAError",
    "UsageError",
    "ValidationError",
    "VerificationError",
]


class TKAError(Exception):
    """Base class of every error tka raises on purpose."""

    def hint(self) -> str | None:
        """Return an optional suggestion a person can act on, for CLIs to print."""
        return None


class DecodeError(TKAError):
    """Input bytes or text could not be decoded (bad CBOR, bad prefix, bad hex, ...)."""


class ValidationError(TKAError):
    """A decoded value breaks a static rule (Tailscale's StaticValidate)."""


class VerificationError(TKAError):
    """A signature, hash link or other cryptographic check failed."""


class NotAuthorized(VerificationError):
    """A node-key signature does not authorize the node key it was presented with."""


class StateError(TKAError):
    """An update cannot be applied to the state it was applied to."""


class LimitExceeded(TKAError):
    """A size or iteration cap (see :mod:`tka.limits`) was exceeded."""


class StorageError(TKAError):
    """A storage backend failed, or holds data that is not valid."""


class UsageError(TKAError):
    """The caller passed arguments that cannot be acted on."""
