"""Where AUMs live: the storage protocol and its backends (twin of ``tka/tailchonk.go``).

The :class:`~tka.authority.Authority` never touches files or databases: it
asks a :class:`Storage` for AUMs by hash, for children of an AUM, for the
heads (stored AUMs with no stored child) and hands it verified AUMs to keep.

Backends:

* :class:`~tka.storage.memory.MemoryStore`: in-process, for tests and tools;
* :class:`~tka.storage.fs.FilesystemStore`: Tailscale's on-disk layout
  (``<dir>/<2 chars>/<base32 hash>``), so a real node's directory can be
  opened and audited;
* :class:`~tka.storage.sqlite.SQLiteStore`: the embedded default for control
  planes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from tka.aum import AUM

__all__ = ["CompactableStorage", "Storage"]


@runtime_checkable
class Storage(Protocol):
    """What an authority needs from a store of AUMs.

    Hashes are the raw 32-byte AUM hashes. Methods raise
    :class:`~tka.errors.StorageError` when the backend fails or holds data
    that is not valid; a missing AUM is not an error (``None`` / empty list).
    """

    def get(self, aum_hash: bytes) -> AUM | None:
        """The stored AUM with this hash, or ``None``."""
        ...

    def children(self, aum_hash: bytes) -> list[AUM]:
        """Stored AUMs whose parent is *aum_hash* (any order)."""
        ...

    def heads(self) -> list[AUM]:
        """Stored AUMs that no stored AUM names as its parent (any order)."""
        ...

    def commit_verified(self, aums: Sequence[AUM]) -> None:
        """Store AUMs the caller has verified.

        Storing a stored AUM again changes nothing but, in some backends, its
        commit time (Tailscale's memory store re-stamps it, its filesystem
        store keeps the first).

        When this returns, the AUMs are durable. A backend that can do so
        commits the batch atomically; one that cannot (the filesystem
        layout) commits AUM by AUM in the given order, parents first, so a
        crash leaves a prefix of the batch and never a partial AUM.
        """
        ...

    def last_active_ancestor(self) -> bytes | None:
        """The hint of where the active chain starts, or ``None`` when unset."""
        ...

    def set_last_active_ancestor(self, aum_hash: bytes) -> None:
        """Record the hint of where the active chain starts."""
        ...


@runtime_checkable
class CompactableStorage(Storage, Protocol):
    """A store that compaction can prune."""

    def all_hashes(self) -> list[bytes]:
        """Hashes of every stored (not purged) AUM."""
        ...

    def commit_time(self, aum_hash: bytes) -> float | None:
        """Unix time at which the AUM was first committed, or ``None`` if not stored."""
        ...

    def purge(self, hashes: Sequence[bytes]) -> None:
        """Forget these AUMs (compaction). Unknown hashes are ignored."""
        ...
