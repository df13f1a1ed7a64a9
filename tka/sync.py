"""Syncing AUMs between two holders of an authority: twin of ``tka/sync.go``.

Each side describes what it has with a :class:`SyncOffer` (its head, some
ancestors on its active chain, and its oldest AUM). Given the other side's
offer, :func:`missing_aums` finds where the two chains meet and returns the
AUMs the other side lacks. Both walks are capped as Tailscale caps them (the
head-intersection cap, then 2000 steps for anything else); past the caps there
is no intersection, which is an answer, not an accident.

Two generations of Tailscale's rules
------------------------------------

Tailscale changed sync on its main branch in commit ``f6fa29463`` ("tka/sync:
send checkpoints to ensure far-behind nodes can catch up"), which is in no
release yet. A :class:`SyncRules` value names the generation, and every
function here takes it as ``rules=``:

:data:`SYNC_RULES_V1_102`
    The releases: tailscale.com v1.101.0-pre (what Headscale v0.29.2 pins)
    through v1.102.5 (what the clients people run are), and v1.103.0-pre.
    ``SyncOffer`` lists the ancestors 4, 16, 64 and 256 steps behind the head
    (``ancestorsSkipStart`` 4, ``ancestorsSkipShift`` 2), then the oldest AUM;
    the walks stop after 400 steps (``maxSyncHeadIntersectionIter``).
:data:`SYNC_RULES_MAIN`
    Main since ``f6fa29463`` (``de9ec7ee``, where ``vectors/`` came from):
    ``SyncOffer`` lists every checkpoint among the 1000 AUMs behind the head,
    then the oldest AUM; the walks stop after 1000 steps.

Nothing else in Tailscale's ``tka/`` differs between v1.102.5 and
``de9ec7ee`` (``MissingAUMs`` reads only the head of its own offer, so the
generations differ there only through the head-intersection cap; the
on-disk store's change in v1.102.3 is not a sync matter, see
``CONFORMANCE.md``). Either side's ``MissingAUMs`` accepts any offer: the
generations interoperate and differ in which AUMs are sent, and in whether a
far-behind, compacted node finds an intersection at all. It needs one of the
far-ahead side's listed ancestors, and Tailscale's nodes compute what to send
from control's offer *before* applying what control sent; a released offer
(4, 16, 64, 256 back, and the oldest) often names none of the AUMs a
compacted node kept, and that node's sync then fails, and keeps failing as
control moves further ahead.

The default is :data:`SYNC_RULES_V1_102`, deliberately: tka's claim is that it
behaves as Tailscale's nodes do, and the nodes and control servers deployed
today (released ``tailscaled``, Headscale) run the released rules, so a tka
peer then offers and sends exactly what a Tailscale peer in its place would.
The conformance vectors were generated on main, so their checker passes
:data:`SYNC_RULES_MAIN` explicitly (``tka.conformance.Context.sync_rules``).
A control-plane role that wants far-behind nodes to catch up can pass
:data:`SYNC_RULES_MAIN` for its offers, as Tailscale's main does; released
nodes accept such offers unchanged. When a Tailscale release ships
``f6fa29463``, the default should follow it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tka.aum import AUM, AUMKind, hash_from_text, hash_to_text
from tka.authority import Authority
from tka.chain import compute_state_at, fast_forward
from tka.errors import DecodeError, StateError
from tka.limits import (
    MAX_SYNC_HEAD_INTERSECTION_ITER_MAIN,
    MAX_SYNC_HEAD_INTERSECTION_ITER_V1_102,
    MAX_SYNC_ITER,
    SYNC_ANCESTORS_SKIP_SHIFT,
    SYNC_ANCESTORS_SKIP_START,
)
from tka.storage import Storage

__all__ = [
    "DEFAULT_SYNC_RULES",
    "SYNC_RULES_MAIN",
    "SYNC_RULES_V1_102",
    "NoIntersection",
    "SyncOffer",
    "SyncRules",
    "missing_aums",
    "sync_offer",
]


@dataclass(frozen=True)
class SyncRules:
    """One generation of Tailscale's sync rules (see the module docstring).

    ``offer`` is how ``SyncOffer`` picks ancestors: ``"skip"`` lists the AUMs
    at exponentially growing distances behind the head (the releases),
    ``"checkpoints"`` lists every checkpoint AUM (main). ``head_intersection_iter``
    is ``maxSyncHeadIntersectionIter``: the cap on the offer's walk and on the
    walk that looks for the remote head on the local chain.
    """

    name: str
    offer: Literal["skip", "checkpoints"]
    head_intersection_iter: int


#: tailscale.com v1.101.0-pre through v1.102.5 (and v1.103.0-pre): the releases.
SYNC_RULES_V1_102: SyncRules = SyncRules("v1.102", "skip", MAX_SYNC_HEAD_INTERSECTION_ITER_V1_102)
#: Tailscale's main branch since f6fa29463 (de9ec7ee generated vectors/).
SYNC_RULES_MAIN: SyncRules = SyncRules("main", "checkpoints", MAX_SYNC_HEAD_INTERSECTION_ITER_MAIN)
#: What the functions here use when not told: the released rules (see above).
DEFAULT_SYNC_RULES: SyncRules = SYNC_RULES_V1_102


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


def sync_offer(
    authority: Authority, storage: Storage, *, rules: SyncRules = DEFAULT_SYNC_RULES
) -> SyncOffer:
    """This side's offer (Tailscale's ``Authority.SyncOffer``) under *rules*."""
    oldest = authority.oldest_ancestor.hash
    ancestors: list[bytes] = []
    curs = authority.head_hash
    if rules.offer == "skip":
        # The releases: the AUM i steps back is listed when i reaches the skip
        # amount (4, 16, 64, 256, ...), before it is looked up, so a listed
        # AUM can be the oldest and then appears twice, as in Go.
        skip = SYNC_ANCESTORS_SKIP_START
        for i in range(rules.head_intersection_iter):
            if i > 0 and i % skip == 0:
                ancestors.append(curs)
                skip <<= SYNC_ANCESTORS_SKIP_SHIFT
            aum = storage.get(curs)
            if aum is None or aum.hash == oldest:
                break
            curs = _go_copy(curs, aum.prev_aum_hash)
    else:
        for _ in range(rules.head_intersection_iter):
            aum = storage.get(curs)
            if aum is None or aum.hash == oldest:
                break
            if aum.message_kind == AUMKind.CHECKPOINT:
                ancestors.append(curs)
            curs = _go_copy(curs, aum.prev_aum_hash)
    ancestors.append(oldest)
    return SyncOffer(authority.head_hash, tuple(ancestors))


def _intersection(
    storage: Storage, local: SyncOffer, remote: SyncOffer, rules: SyncRules
) -> tuple[str, bytes | None]:
    """Return ("up-to-date" | "head" | "tail", hash)."""
    if remote.head == local.head:
        return "up-to-date", local.head
    if storage.get(remote.head) is not None:
        curs = local.head
        for _ in range(rules.head_intersection_iter):
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


def missing_aums(
    authority: Authority,
    storage: Storage,
    remote: SyncOffer,
    *,
    rules: SyncRules = DEFAULT_SYNC_RULES,
) -> list[AUM]:
    """AUMs this side holds that the side which sent *remote* lacks, oldest first.

    Tailscale's ``Authority.MissingAUMs`` under *rules*. They follow this
    side's active chain from the point where the chains meet. Raises
    :class:`NoIntersection` when they do not meet.
    """
    local = sync_offer(authority, storage, rules=rules)
    kind, meet = _intersection(storage, local, remote, rules)
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
