"""The verification core: replay a set of AUMs as Tailscale does and record what happened.

Every source reader ends in :func:`audit_tree`. From a genesis the whole
tree is replayed with ``Authority.bootstrap`` and ``inform`` (the
reference), and walked AUM by AUM alongside to know the state after each
one (for the history, the forks and the findings). :func:`verify_from`
checks the AUMs after a state trusted as given (a pin).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

from tka.aum import AUM, AUMKind, hash_to_text
from tka.authority import Authority, verify_aum
from tka.chain import pick_next_aum
from tka.errors import TKAError
from tka.state import State
from tka.storage.memory import MemoryStore

from .findings import findings
from .report import (
    AuditReason,
    AuditReport,
    AuditWarning,
    AUMRecord,
    ForkBranch,
    ForkRecord,
    PartialVerification,
    key_name,
    keys_of,
    signers,
    tlpub,
)

__all__ = ["FromState", "Progress", "audit_aums", "audit_tree", "fork_records", "verify_from"]

#: Called with a count of AUMs just checked, to drive a progress bar.
Progress = Callable[[int], None]

# Progress is reported in steps: a callback per AUM would cost more than
# the check on long chains.
_PROGRESS_STEP: Final = 64

_TRUNCATED_SET_REASON: Final = (
    "oldest AUM has a parent: history is truncated (e.g. by compaction), cannot verify from genesis"
)
_TRUNCATED_REASON: Final = (
    "oldest message has a parent: history is truncated (e.g. by --limit), "
    "cannot verify from genesis"
)


@dataclass
class _Walk:
    """States reached walking a tree of AUMs from an anchor, verifying each step."""

    states: dict[bytes, State]  # state after each verified AUM
    failure: tuple[AUM, str] | None  # the first AUM (parents first) that failed
    unchecked: set[bytes]  # AUMs below a failure, never checked


def _children_by_parent(aums: Iterable[AUM]) -> dict[bytes, list[AUM]]:
    """Each parent hash and its children, in the order *aums* lists them."""
    children: dict[bytes, list[AUM]] = {}
    for a in aums:
        p = a.parent
        if p is not None:
            children.setdefault(p, []).append(a)
    return children


def _parents_first(aums: Iterable[AUM], roots: Sequence[AUM]) -> list[AUM]:
    """Breadth-first from *roots*, siblings by hash: a deterministic parents-first order."""
    children = _children_by_parent(aums)
    out: list[AUM] = []
    seen: set[bytes] = set()
    queue = sorted(roots, key=lambda a: a.hash)
    i = 0
    while i < len(queue):
        a = queue[i]
        i += 1
        if a.hash in seen:
            continue
        seen.add(a.hash)
        out.append(a)
        queue.extend(sorted(children.get(a.hash, []), key=lambda c: c.hash))
    return out


def _walk(
    order: Sequence[AUM], anchor: AUM, anchor_state: State, progress: Progress | None = None
) -> _Walk:
    """Verify every AUM after *anchor* against the state at its parent (as ``Inform``)."""
    states = {anchor.hash: anchor_state}
    failure: tuple[AUM, str] | None = None
    unchecked: set[bytes] = set()
    for n, aum in enumerate(order, 1):
        if progress is not None and n % _PROGRESS_STEP == 0:
            progress(_PROGRESS_STEP)
        if aum.hash == anchor.hash:
            continue
        parent = aum.parent
        state = states.get(parent) if parent is not None else None
        if state is None:
            unchecked.add(aum.hash)
            continue
        try:
            verify_aum(aum, state)
            states[aum.hash] = state.apply(aum)
        except TKAError as exc:
            unchecked.add(aum.hash)
            if failure is None:
                failure = (aum, str(exc))
    return _Walk(states, failure, unchecked)


def _anchor_state(anchor: AUM) -> State | None:
    """The state a bootstrap from *anchor* starts in; ``None`` if it cannot start there.

    The replay reports why; this only lets the walk locate later failures.
    """
    if anchor.message_kind != AUMKind.CHECKPOINT or anchor.state is None:
        return None
    try:
        verify_aum(anchor, anchor.state, is_genesis=True)
    except TKAError:
        return None
    return State.from_checkpoint(anchor)


def _replay(anchor: AUM, rest: Sequence[AUM]) -> Authority:
    """Tailscale's replay: ``Bootstrap(anchor)`` then one ``Inform(rest)``."""
    store = MemoryStore()
    authority = Authority.bootstrap(store, anchor)
    if rest:
        authority.inform(store, list(rest))
    return authority


def _active_chain(by_hash: dict[bytes, AUM], head: bytes | None) -> list[AUM]:
    """From the head back to the oldest AUM held, returned oldest first."""
    out: list[AUM] = []
    cursor = head
    seen: set[bytes] = set()
    while cursor is not None and cursor in by_hash and cursor not in seen:
        seen.add(cursor)
        aum = by_hash[cursor]
        out.append(aum)
        cursor = aum.parent
    out.reverse()
    return out


# -- history and forks ------------------------------------------------------------------


def _record(
    aum: AUM,
    before: State | None,
    after: State | None,
    active: bool,
    verified: bool | None,
    index: int | None,
    time: float | None = None,
) -> AUMRecord:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    if before is not None and after is not None:
        old, new = keys_of(before), keys_of(after)
        added = tuple(k for k in new if k not in old)
        removed = tuple(k for k in old if k not in new)
        changed = tuple(
            k
            for k in new
            if k in old and (old[k].votes, old[k].meta or {}) != (new[k].votes, new[k].meta or {})
        )
    elif after is not None:
        added = tuple(keys_of(after))  # an anchor: every key is introduced here
    else:
        # Not verifiable: say what the AUM itself claims to do.
        if aum.message_kind == AUMKind.ADD_KEY and aum.key is not None:
            added = (key_name(aum.key),)
        elif aum.message_kind == AUMKind.REMOVE_KEY:
            removed = (tlpub(aum.key_id),)
        elif aum.message_kind == AUMKind.UPDATE_KEY:
            changed = (tlpub(aum.key_id),)
    parent = aum.parent
    return AUMRecord(
        hash=aum.hash_text,
        parent=None if parent is None else hash_to_text(parent),
        kind=aum.kind_name,
        signers=signers(aum),
        keys_added=added,
        keys_removed=removed,
        keys_changed=changed,
        trusted_keys=None if after is None else len(after.keys or ()),
        total_votes=None if after is None else sum(k.votes for k in after.keys or ()),
        active=active,
        verified=verified,
        message_index=index,
        time=time,
    )


def fork_records(
    order: Sequence[AUM], states: dict[bytes, State], active: set[bytes]
) -> list[ForkRecord]:
    """Every AUM with several children whose state is known, and the branch Tailscale follows."""
    children = _children_by_parent(order)
    out: list[ForkRecord] = []
    for parent_hash, kids in children.items():
        if len(kids) < 2 or parent_hash not in states:
            continue
        state = states[parent_hash]
        winner = pick_next_aum(state, kids)
        weights = {k.hash: k.weight(state) for k in kids}
        top = max(weights.values())
        tied = [k for k in kids if weights[k.hash] == top]
        rule: Literal["votes", "remove-key", "lowest-hash"] = "votes"
        if len(tied) > 1:
            removes = [k for k in tied if k.message_kind == AUMKind.REMOVE_KEY]
            rule = "remove-key" if len(removes) == 1 else "lowest-hash"
        out.append(
            ForkRecord(
                parent=hash_to_text(parent_hash),
                branches=tuple(
                    ForkBranch(k.hash_text, k.kind_name, weights[k.hash])
                    for k in sorted(kids, key=lambda a: a.hash)
                ),
                winner=winner.hash_text,
                rule=rule,
                active=parent_hash in active,
            )
        )
    out.sort(key=lambda f: f.parent)
    return out


# -- the audit of a set of AUMs ---------------------------------------------------------


def _partial(anchor: AUM, order: Sequence[AUM]) -> PartialVerification:
    """Replay a cut history from *anchor*, trusting it as Tailscale trusts a stored checkpoint."""
    rest = [a for a in order if a.hash != anchor.hash]
    below = {anchor.hash}
    for a in rest:
        if a.parent in below:
            below.add(a.hash)
    rest = [a for a in rest if a.hash in below]
    try:
        authority = _replay(anchor, rest)
    except TKAError as exc:
        return PartialVerification(anchor.hash_text, False, None, None, str(exc), len(rest))
    return PartialVerification(
        anchor.hash_text, True, authority.head.hash_text, authority.state, None, len(rest)
    )


def audit_tree(
    aums: Iterable[AUM],
    source: str,
    *,
    claimed_head: bytes | None = None,
    claim_name: str = "claimed head",
    index_of: dict[bytes, int] | None = None,
    times: dict[bytes, float] | None = None,
    extra: Sequence[AuditWarning] = (),
    progress: Progress | None = None,
) -> AuditReport:
    """Audit a set of AUMs from one source: the core every reader calls.

    The AUMs must form one tree (a second root, genesis or orphan, makes
    the set invalid, as it makes Tailscale's ``Open`` fail). From a genesis
    the whole tree is replayed; from a later root the part after its oldest
    checkpoint is checked (verdict ``incomplete``). *claimed_head* is the
    head the source says it has (named *claim_name* in reasons); *index_of*
    gives lock-log positions, *times* the times the source recorded;
    *progress* is called with counts of AUMs checked, for progress bars.
    """
    by_hash: dict[bytes, AUM] = {}
    for a in aums:
        by_hash.setdefault(a.hash, a)
    count = len(by_hash)
    warnings = list(extra)
    if not by_hash:
        return AuditReport(source, "invalid", (AuditReason("no AUMs"),), warnings=tuple(warnings))

    roots = sorted(
        (a for a in by_hash.values() if a.parent is None or a.parent not in by_hash),
        key=lambda a: a.hash,
    )
    if len(roots) > 1:
        reasons = []
        genesis = [r for r in roots if r.parent is None]
        if len(genesis) == 1:
            # An AUM altered in transit changes its hash, which orphans its
            # children; name the altered AUM itself first: walking the tree
            # that does hang off the genesis finds where verification fails.
            anchor = _anchor_state(genesis[0])
            if anchor is not None:
                walked = _walk(_parents_first(by_hash.values(), genesis), genesis[0], anchor)
                if walked.failure is not None:
                    altered, why = walked.failure
                    position = None if index_of is None else index_of.get(altered.hash)
                    reasons.append(
                        AuditReason(f"AUM {altered.hash_text}: {why}", position, altered.hash_text)
                    )
        for r in roots:
            if r.parent is None:
                if len(genesis) > 1:
                    reasons.append(
                        AuditReason(
                            f"AUM {r.hash_text}: one of several genesis AUMs", aum=r.hash_text
                        )
                    )
            else:
                reasons.append(
                    AuditReason(
                        f"AUM {r.hash_text}: parent {hash_to_text(r.parent)} is not among the AUMs",
                        aum=r.hash_text,
                    )
                )
        return AuditReport(
            source,
            "invalid",
            tuple(reasons),
            aum_count=count,
            aums=tuple(by_hash.values()),
            warnings=tuple(warnings),
        )

    (root,) = roots
    order = _parents_first(by_hash.values(), roots)

    def idx(a: AUM) -> int | None:
        return None if index_of is None else index_of.get(a.hash)

    def when(a: AUM) -> float | None:
        return None if times is None else times.get(a.hash)

    if root.parent is not None:
        return _incomplete(
            source, root, order, by_hash, count, warnings, idx, claimed_head, when, progress
        )

    anchor_state = _anchor_state(root)
    walk = (
        _walk(order, root, anchor_state, progress)
        if anchor_state is not None
        else _Walk({}, None, {a.hash for a in order})
    )
    try:
        authority = _replay(root, order[1:])
    except TKAError as exc:
        bad = root if anchor_state is None else (walk.failure[0] if walk.failure else None)
        reason = AuditReason(
            f"replay: {exc}",
            message_index=None if bad is None else idx(bad),
            aum=None if bad is None else bad.hash_text,
        )
        history = tuple(
            _record(
                a,
                None if a.parent is None else walk.states.get(a.parent),
                walk.states.get(a.hash),
                False,
                _verified(a, walk),
                idx(a),
                when(a),
            )
            for a in order
        )
        return AuditReport(
            source,
            "invalid",
            (reason,),
            aum_count=count,
            aums=tuple(by_hash.values()),
            history=history,
            warnings=tuple(warnings),
        )

    head = authority.head.hash
    chain = _active_chain(by_hash, head)
    active = {a.hash for a in chain}
    states = dict(walk.states)
    # The walk and the replay apply the same rules; the replay is the
    # reference, so its head state wins if they ever disagree.
    states[head] = authority.state
    history = tuple(
        _record(
            a,
            None if a.parent is None else states.get(a.parent),
            states.get(a.hash),
            a.hash in active,
            True,
            idx(a),
            when(a),
        )
        for a in order
    )
    forks = fork_records(order, states, active)
    mismatch: list[AuditReason] = []
    if claimed_head is not None and claimed_head != head:
        mismatch.append(
            AuditReason(
                f"replay ends at {authority.head.hash_text}, not at the {claim_name} "
                f"{hash_to_text(claimed_head)}",
                message_index=None if index_of is None else index_of.get(claimed_head),
                aum=hash_to_text(claimed_head),
            )
        )
    warnings.extend(findings(chain, states, authority.state, root, forks, order))
    report = AuditReport(
        source,
        "valid",
        (),
        head=authority.head.hash_text,
        state=authority.state,
        genesis=root.hash_text,
        aum_count=count,
        aums=tuple(by_hash.values()),
        history=history,
        forks=tuple(forks),
        warnings=tuple(warnings),
    )
    if mismatch:
        # Everything else stands; only the verdict, and with it the head and
        # state vouched for, goes.
        return replace(report, verdict="invalid", reasons=tuple(mismatch), head=None, state=None)
    return report


def _verified(a: AUM, walk: _Walk) -> bool | None:
    if a.hash in walk.states:
        return True
    if walk.failure is not None and walk.failure[0].hash == a.hash:
        return False
    return None


def _incomplete(
    source: str,
    root: AUM,
    order: Sequence[AUM],
    by_hash: dict[bytes, AUM],
    count: int,
    warnings: list[AuditWarning],
    idx: Callable[[AUM], int | None],
    claimed_head: bytes | None,
    when: Callable[[AUM], float | None],
    progress: Progress | None,
) -> AuditReport:
    """A history whose oldest AUM has a parent: verify what can be, trusting a checkpoint."""
    # The oldest checkpoint held is the best anchor: everything after it can
    # be checked (for a directory, the root is that checkpoint).
    anchor = next((a for a in order if a.message_kind == AUMKind.CHECKPOINT), None)
    partial = None
    states: dict[bytes, State] = {}
    walk: _Walk | None = None
    if anchor is None:
        warnings.append(
            AuditWarning(
                "unverifiable",
                "warning",
                "no checkpoint in the history held: no signature could be checked",
            )
        )
    else:
        partial = _partial(anchor, order)
        anchor_state = State.from_checkpoint(anchor)
        walk = _walk(order, anchor, anchor_state, progress)
        states = walk.states
        if partial.ok:
            warnings.append(
                AuditWarning(
                    "partial-verification",
                    "notice",
                    f"verified {partial.verified} AUM(s) after checkpoint {anchor.hash_text}, "
                    "trusting that checkpoint as given (the history before it is not held)",
                    aums=(anchor.hash_text,),
                )
            )
        else:
            bad = walk.failure[0] if walk.failure else anchor
            warnings.append(
                AuditWarning(
                    "partial-verification-failed",
                    "warning",
                    f"replaying from checkpoint {anchor.hash_text} fails: {partial.error}",
                    aums=(bad.hash_text,),
                )
            )
    chain: list[AUM] = []
    if partial is not None and partial.ok and partial.state is not None:
        head_hash = partial.state.last_aum_hash
        chain = _active_chain(by_hash, head_hash)
        if head_hash is not None:
            states[head_hash] = partial.state
        if claimed_head is not None and head_hash != claimed_head:
            warnings.append(
                AuditWarning(
                    "claimed-head-differs",
                    "warning",
                    f"replaying from checkpoint {partial.anchor} ends at {partial.head}, "
                    f"not at the claimed head {hash_to_text(claimed_head)}",
                    aums=(hash_to_text(claimed_head),),
                )
            )
    active = {a.hash for a in chain}
    history = tuple(
        _record(
            a,
            None if a.parent is None else states.get(a.parent),
            states.get(a.hash),
            a.hash in active,
            None if walk is None else _verified(a, walk),
            idx(a),
            when(a),
        )
        for a in order
    )
    forks = fork_records(order, states, active)
    if partial is not None and partial.ok and partial.state is not None and anchor is not None:
        tail = [a for a in chain if a.hash in states]
        warnings.extend(findings(tail, states, partial.state, anchor, forks, order))
    return AuditReport(
        source,
        "incomplete",
        (
            AuditReason(
                _TRUNCATED_REASON if source == "lock-log" else _TRUNCATED_SET_REASON,
                message_index=idx(root),
                aum=root.hash_text,
            ),
        ),
        aum_count=count,
        aums=tuple(by_hash.values()),
        history=history,
        forks=tuple(forks),
        warnings=tuple(warnings),
        partial=partial,
    )


def audit_aums(aums: Iterable[AUM], *, claimed_head: bytes | None = None) -> AuditReport:
    """Audit a collection of AUMs (any order, duplicates ignored, forks allowed).

    The AUMs must form one tree. From a genesis the whole tree is replayed
    (bootstrap, then inform parents first); *claimed_head*, when given, must
    be the head Tailscale's fork choice picks.
    """
    return audit_tree(aums, "aums", claimed_head=claimed_head)


@dataclass(frozen=True)
class FromState:
    """The AUMs after a trusted state, checked (see :func:`verify_from`)."""

    head: AUM | None  # where Tailscale's fork choice ends (None: nothing after the start)
    state: State  # the state at that head (the start state when nothing follows)
    chain: tuple[AUM, ...]  # the AUMs from the start (excluded) to the head, oldest first
    states: dict[bytes, State]  # the state after each AUM that verified
    failure: tuple[AUM, str] | None  # the first AUM (parents first) that does not verify
    checked: int  # AUMs checked


def verify_from(
    aums: Iterable[AUM], start: bytes, start_state: State, progress: Progress | None = None
) -> FromState:
    """Check every AUM that descends from *start*, trusting *start_state* as the state there.

    Each AUM is verified against the state at its parent, as ``Inform``
    does, and the head is where Tailscale's fork choice leads from *start*.
    Used to continue from a pin: the part of a cut log after the pinned
    head is checked as strictly as a replay from genesis would check it.
    """
    children: dict[bytes, list[AUM]] = {}
    seen: set[bytes] = set()
    for a in aums:
        if a.hash in seen or a.parent is None:
            continue
        seen.add(a.hash)
        children.setdefault(a.parent, []).append(a)
    states: dict[bytes, State] = {start: start_state}
    failure: tuple[AUM, str] | None = None
    queue = deque([start])
    checked = 0
    while queue:
        parent = queue.popleft()
        for aum in sorted(children.get(parent, []), key=lambda c: c.hash):
            checked += 1
            if progress is not None and checked % _PROGRESS_STEP == 0:
                progress(_PROGRESS_STEP)
            try:
                verify_aum(aum, states[parent])
                states[aum.hash] = states[parent].apply(aum)
            except TKAError as exc:
                if failure is None:
                    failure = (aum, str(exc))
                continue
            queue.append(aum.hash)
    # Fork choice among the AUMs that verified, as a node that was informed
    # of them would make it (it never stores the ones that fail).
    chain: list[AUM] = []
    cursor, state = start, start_state
    while True:
        kids = [k for k in children.get(cursor, []) if k.hash in states]
        if not kids:
            break
        nxt = pick_next_aum(state, kids)
        chain.append(nxt)
        cursor, state = nxt.hash, states[nxt.hash]
    return FromState(chain[-1] if chain else None, state, tuple(chain), states, failure, checked)
