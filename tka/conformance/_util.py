"""Small helpers shared by the per-kind conformance checkers."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tka.sync import SyncRules

__all__ = ["Context", "Mismatch", "close_store", "expect", "make_store", "unhex"]


class Mismatch(AssertionError):
    """tka's behaviour differs from what the vector recorded."""


@dataclass(frozen=True)
class Context:
    """Options that apply to a whole run (for example which storage backend to use).

    ``sync_rules`` is the generation of Tailscale's sync rules the ``sync``
    cases were made with (``tka.sync.SyncRules``); ``None`` means
    ``SYNC_RULES_MAIN``, that of the commit that generated ``vectors/``.
    """

    store: str = "memory"
    sync_rules: SyncRules | None = None


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


def make_store(ctx: Context, tmpdir: str, clock: Callable[[], float] | None = None) -> Any:
    """A fresh store of the backend *ctx* selects, rooted in *tmpdir* when on disk."""
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    if ctx.store == "memory":
        from tka.storage.memory import MemoryStore

        return MemoryStore(**kwargs)
    if ctx.store == "sqlite":
        from tka.storage.sqlite import SQLiteStore

        return SQLiteStore(os.path.join(tmpdir, "tka.db"), **kwargs)
    if ctx.store == "fs":
        from tka.storage.fs import FilesystemStore

        return FilesystemStore(os.path.join(tmpdir, "chonk"), **kwargs)
    raise Mismatch(f"unknown store {ctx.store!r}")


def close_store(store: Any) -> None:
    """Close a store that holds resources (SQLite connections)."""
    close = getattr(store, "close", None)
    if callable(close):
        close()
