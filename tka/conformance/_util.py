"""Small helpers shared by the per-kind conformance checkers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Context", "Mismatch", "expect", "unhex"]


class Mismatch(AssertionError):
    """tka's behaviour differs from what the vector recorded."""


@dataclass(frozen=True)
class Context:
    """Options that apply to a whole run (for example which storage backend to use)."""

    store: str = "memory"


def unhex(value: Any) -> bytes | None:
    """Decode a vector's lower-case hex field; ``None`` stays ``None``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise Mismatch(f"vector field is not hex text: {value!r}")
    return bytes.fromhex(value)


def expect(what: str, got: object, want: object) -> None:
    """Raise :class:`Mismatch` naming *what* when *got* differs from *want*."""
    if got != want:
        g, w = repr(got), repr(want)
        if len(g) > 300:
            g = g[:300] + "..."
        if len(w) > 300:
            w = w[:300] + "..."
        raise Mismatch(f"{what}: got {g}, want {w}")
