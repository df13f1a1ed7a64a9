"""Syncing AUMs between two holders of an authority: twin of ``tka/sync.go``.

Each side describes what it has with a :class:`SyncOffer` (its head, the
checkpoints on its active chain and its oldest AUM). Given the other side's
offer, :func:`missing_aums` finds where the two chains meet and returns the
AUMs the other side lacks. Both walks are capped as Tailscale caps them (1000
steps looking for the remote head, 2000 steps for anything else); past the
caps there is no intersection, which is an answer, not an accident.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tka.aum import AUM, AUMKind, hash_from_text, hash_to_text
from tka.authority import Authority
from tka.chain import compute_state_at, fast_forward
from tka.errors import DecodeError, StateError
from tka.limits import MAX_SYNC_HEAD_INTERSECTION_ITER, MAX_SYNC_ITER
from tka.storage import Storage

__all__ = ["NoIntersection", "SyncOffer", "missing_aums", "sync_offer"]


class NoIntersection(StateError):
    """The two chains share no AUM that either side can find within the caps."""


@dataclass(frozen=True)
class SyncOffer:
    """What one side holds: its head and some ancestors, newest first, oldest last."""

    head: bytes
    ancestors: tuple[bytes, ...]

    def to_text(self) -> tuple[str, list[str]]:
        """The wire form: base32 head and ancestors (Tailscale's ``FromSyncOffer``)."""
        return hash_to_text(self.head), [hash_to_text(a) for a in self.ancestors]

    @classmethod
    def from_text(cls, head: str, ancestors: Sequence[str] | None) -> SyncOffer:
        """Parse the wire form (Tailscale's ``ToSyncOffer``)."""
        try:
            h = hash_from_text(head)
        except DecodeError as exc:
            raise DecodeError(f"sync offer head: {exc}") from None
        parsed = []
        for i, a in enumerate(ancestors or ()):
            try:
                parsed.append(hash_from_text(a))
            except DecodeError as exc:
                raise DecodeError(f"sync offer ancestor[{i}]: {exc}") from None
        return cls(h, tuple(parsed))


def _go_copy(dst: bytes, src: bytes | None) -> bytes:
    # Tailscale steps back with copy(curs[:], aum.PrevAUMHash): a missing or
    # short previous hash overwrites only a prefix. Kept exactly, as it
    # decides where a walk goes next.
    src = (src or b"")[: len(dst)]
    return src + dst[len(src) :]


def sync_offer(authority: Authority, storage: Storage) -> SyncOffer:
    """This side's offer (Tailscale's ``Authority.SyncOffer``)."""
    oldest = authority.oldest_ancestor.hash
    ancestors: list[bytes] = []
    curs = authority.head_hash
    for _ in range(MAX_SYNC_HEAD_INTERSECTION_ITER):
        aum = storage.get(curs)
        if aum is None or aum.hash == oldest:
            break
        if aum.message_kind == AUMKind.CHECKPOINT:
            ancestors.append(curs)
        curs = _go_copy(curs, aum.prev_aum_hash)
    ancestors.append(oldest)
    return SyncOffer(authority.head_hash, tuple(ancestors))


def _intersection(
    storage: Storage, local: SyncOffer, remote: SyncOffer
) -> tuple[str, bytes | None]:
    """Return ("up-to-date" | "head" | "tail", hash)."""
    if remote.head == local.head:
        return "up-to-date", local.head
    if storage.get(remote.head) is not None:
        curs = local.head
        for _ in range(MAX_SYNC_HEAD_INTERSECTION_ITER):
            aum = storage.get(curs)
            if aum is None:
                break
            if aum.hash == remote.head:
                return "head", aum.hash
            curs = _go_copy(curs, aum.prev_aum_hash)
    for ancestor in remote.ancestors:
        if storage.get(ancestor) is None:
            continue
        state = compute_state_at(storage, ancestor, MAX_SYNC_ITER)
        end, _ = fast_forward(
            storage, state, done=lambda a, _s: a.hash == local.head, max_iter=MAX_SYNC_ITER
        )
        if end.hash == local.head:
            return "tail", ancestor
    raise NoIntersection("intersection: no intersection")


def missing_aums(authority: Authority, storage: Storage, remote: SyncOffer) -> list[AUM]:
    """AUMs this side holds that the side which sent *remote* lacks, oldest first.

    They follow this side's active chain from the point where the chains
    meet. Raises :class:`NoIntersection` when they do not meet.
    """
    local = sync_offer(authority, storage)
    kind, meet = _intersection(storage, local, remote)
    if kind == "up-to-date" or meet is None:
        return []
    out: list[AUM] = []

    def collect(a: AUM, _s: object) -> bool:
        if a.hash != meet:
            out.append(a)
        return False

    state = compute_state_at(storage, meet, MAX_SYNC_ITER)
    fast_forward(storage, state, done=collect, max_iter=MAX_SYNC_ITER)
    return out
