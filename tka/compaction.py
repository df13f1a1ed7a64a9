"""Pruning old AUMs from a store: twin of ``Compact`` in Tailscale's ``tka/tailchonk.go``.

Compaction keeps at least ``min_chain`` AUMs back from the head and every AUM
younger than ``min_age``, then keeps going back to a checkpoint (a chain must
start at one), keeps every descendant of a kept AUM and the AUMs linking kept
side branches to the new start. Everything else is purged, and the new start
is recorded as the last-active-ancestor hint so :meth:`Authority.open` finds it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tka.aum import AUMKind, hash_to_text
from tka.errors import StateError, StorageError, UsageError
from tka.limits import COMPACTION_MIN_AGE_SECONDS, COMPACTION_MIN_CHAIN
from tka.storage import CompactableStorage

__all__ = ["CompactionOptions", "compact"]

_ACTIVE = 1  # on the active chain, fewer than min_chain hops from the head
_YOUNG = 2  # committed less than min_age ago
_LEAF = 4  # a descendant of a kept AUM
_ANCESTOR = 8  # links a kept AUM to the new last-active ancestor
_CANDIDATE = 16  # on the active chain (older than the kept part)
_KEEP = _ACTIVE | _YOUNG | _LEAF | _ANCESTOR


@dataclass(frozen=True)
class CompactionOptions:
    """How much history to keep (Tailscale's ``CompactionOptions``)."""

    min_chain: int = COMPACTION_MIN_CHAIN
    min_age_seconds: float = COMPACTION_MIN_AGE_SECONDS


def _mark_active_chain(
    storage: CompactableStorage, verdict: dict[bytes, int], min_chain: int, head: bytes
) -> bytes:
    nxt = storage.get(head)
    if nxt is None:
        raise StorageError(f"reading head {hash_to_text(head)}: not stored")
    for _ in range(min_chain):
        h = nxt.hash
        verdict[h] = verdict.get(h, 0) | _ACTIVE
        parent = nxt.parent
        if parent is None:
            return h
        p = storage.get(parent)
        if p is None:
            return h
        nxt = p
    # Keep going back to a checkpoint that is old enough to start from.
    last_active: bytes | None = None
    while True:
        h = nxt.hash
        verdict[h] = verdict.get(h, 0) | _ACTIVE
        parent = nxt.parent
        young = verdict[h] & _YOUNG != 0
        if nxt.message_kind == AUMKind.CHECKPOINT:
            last_active = h
            if not young or parent is None:
                break
        if parent is None:
            raise StorageError(
                "searching for compaction target: reached genesis without a checkpoint"
            )
        p = storage.get(parent)
        if p is None:
            raise StorageError(
                f"searching for compaction target ({hash_to_text(parent)}): not stored"
            )
        nxt = p
    # Everything older on the active chain may go, unless kept for another reason.
    while True:
        parent = nxt.parent
        if parent is None:
            break
        verdict[parent] = verdict.get(parent, 0) | _CANDIDATE
        p = storage.get(parent)
        if p is None:
            break
        nxt = p
    return last_active


def _mark_young(
    storage: CompactableStorage, verdict: dict[bytes, int], min_age: float, now: float
) -> None:
    min_time = now - min_age
    for h in verdict:
        t = storage.commit_time(h)
        if t is None:
            raise StorageError(f"commit time of {hash_to_text(h)}: not stored")
        if t > min_time:
            verdict[h] |= _YOUNG


def _mark_ancestor_intersection(
    storage: CompactableStorage, verdict: dict[bytes, int], candidate: bytes
) -> bytes:
    to_scan = [h for h, v in verdict.items() if v & _KEEP and h != candidate]
    adjusted = False
    while to_scan:
        next_scan: list[bytes] = []
        for h in to_scan:
            if verdict.get(h, 0) & _ANCESTOR:
                continue
            verdict[h] = verdict.get(h, 0) | _ANCESTOR
            aum = storage.get(h)
            if aum is None:
                raise StorageError(f"reading {hash_to_text(h)}: not stored")
            parent = aum.parent
            if parent is None:
                raise StateError("reached genesis AUM without intersecting with candidate ancestor")
            if verdict.get(parent, 0) & _KEEP:
                continue
            if verdict.get(parent, 0) & _CANDIDATE:
                # A kept side branch forks off older history: start there.
                candidate = parent
                adjusted = True
                verdict[parent] = verdict.get(parent, 0) | _ANCESTOR
                cur = parent
                while True:
                    for child in storage.children(cur):
                        v = verdict.get(child.hash, 0)
                        if v & _CANDIDATE and not v & _ACTIVE:
                            verdict[child.hash] = v | _ANCESTOR
                            cur = child.hash
                            break
                    else:
                        break
            next_scan.append(parent)
        to_scan = next_scan
    if adjusted:
        # The chain must start at a checkpoint: walk back to one.
        aum = storage.get(candidate)
        if aum is None:
            raise StorageError(
                f"searching for compaction target ({hash_to_text(candidate)}): not stored"
            )
        while True:
            h = aum.hash
            verdict[h] = verdict.get(h, 0) | _ACTIVE
            if aum.message_kind == AUMKind.CHECKPOINT:
                candidate = h
                break
            parent = aum.parent
            if parent is None:
                raise StateError("reached genesis AUM without finding a checkpoint to start from")
            p = storage.get(parent)
            if p is None:
                raise StorageError(
                    f"searching for compaction target ({hash_to_text(parent)}): not stored"
                )
            aum = p
    return candidate


def _mark_descendants(storage: CompactableStorage, verdict: dict[bytes, int]) -> None:
    to_scan = [h for h, v in verdict.items() if v & _KEEP]
    while to_scan:
        next_scan: list[bytes] = []
        for h in to_scan:
            if verdict.get(h, 0) & _LEAF:
                continue
            verdict[h] = verdict.get(h, 0) | _LEAF
            next_scan.extend(c.hash for c in storage.children(h))
        to_scan = next_scan


def compact(
    storage: CompactableStorage,
    head: bytes,
    options: CompactionOptions | None = None,
    now: float | None = None,
) -> bytes:
    """Purge AUMs no longer needed; return (and store) the new last-active ancestor."""
    options = options or CompactionOptions()
    if options.min_chain == 0:
        raise UsageError("compaction: min_chain must be set")
    if options.min_age_seconds == 0:
        raise UsageError("compaction: min_age must be set")
    now = time.time() if now is None else now
    verdict = {h: 0 for h in storage.all_hashes()}
    _mark_young(storage, verdict, options.min_age_seconds, now)
    last_active = _mark_active_chain(storage, verdict, options.min_chain, head)
    _mark_descendants(storage, verdict)
    last_active = _mark_ancestor_intersection(storage, verdict, last_active)
    to_delete = [h for h, v in verdict.items() if not v & _KEEP]
    storage.set_last_active_ancestor(last_active)
    storage.purge(to_delete)
    return last_active
