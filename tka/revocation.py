"""Retroactive revocation: erasing compromised keys by forking the chain.

Twin of ``MakeRetroactiveRevocation`` in Tailscale's ``tka/tka.go`` and of the
``tailscale lock revoke-keys`` flow (start, ``--cosign`` on other signing
nodes, ``--finish``). A compromised key may have signed updates already; a
plain remove-key AUM would leave them in force. Instead a checkpoint AUM
holding today's state minus the compromised keys is attached to an older
AUM, from before the compromised keys could act, so it forks the chain there.
Fork choice then prefers it only if the keys that signed it outweigh the
branch it competes with, which is why it is co-signed by further trusted
keys before being submitted. :func:`check_recovery` says whether it would
win, so :func:`finish_recovery` never submits a fork that would lose.

What a recovery does and does not undo (as in Tailscale): the new state is
*today's* trusted keys and disablement values minus the revoked keys. The
updates after the fork point leave the active chain, but their effects are
carried over: keys the revoked keys added stay trusted (:func:`keys_added_by`
names them, and the caller may revoke them too), keys they removed are not
restored, and node-key signatures made by a revoked key stop admitting
their nodes.

Signers of a recovery: only a key trusted at the fork point can sign it (any
other signature makes the whole AUM invalid there), and a key being revoked
must not vouch for its own revocation. Both are refused when the recovery
is started, at each co-signature and at the finish, and the vote count
reported uses only the valid signers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tka import ed25519
from tka.aum import AUM, AUMKind, hash_to_text
from tka.authority import Authority, Signer
from tka.chain import compute_state_at, pick_next_aum
from tka.errors import NotAuthorized, StateError, TKAError, UsageError, ValidationError
from tka.limits import MAX_SCAN_ITERATIONS
from tka.state import State
from tka.storage import Storage

__all__ = [
    "AddedKey",
    "RecoveryCheck",
    "RecoverySigner",
    "RevocationPlan",
    "check_recovery",
    "cosign_recovery",
    "finish_recovery",
    "keys_added_by",
    "make_retroactive_revocation",
    "plan_revocation",
    "recovery_signers",
    "revoked_by",
]


def _key_text(key_id: bytes) -> str:
    return f"tlpub:{key_id.hex()}"


def _fork_point(
    authority: Authority, storage: Storage, remove_keys: Sequence[bytes], our_key: bytes
) -> bytes:
    """Newest AUM on the active chain where no revoked key, but our key, is trusted.

    As Tailscale's ``findParentForRewrite``: when no such AUM exists the
    oldest AUM held is the answer (the caller then checks who may sign).
    """
    cursor = authority.head_hash
    oldest = authority.oldest_ancestor.hash
    for _ in range(MAX_SCAN_ITERATIONS + 1):
        if cursor == oldest:
            return cursor
        aum = storage.get(cursor)
        if aum is None:
            raise StateError(f"reading AUM {hash_to_text(cursor)}: not stored")
        state = compute_state_at(storage, cursor)
        revoked_trusted = any(state.get_key(k) is not None for k in remove_keys)
        if not revoked_trusted and state.get_key(our_key) is not None:
            return cursor
        parent = aum.parent
        if parent is None:
            return cursor
        cursor = parent
    raise StateError("finding the fork point: iteration limit exceeded")


def _active_path(authority: Authority, storage: Storage, fork: bytes) -> list[AUM]:
    """The active chain's AUMs after *fork* up to the head, oldest first."""
    path: list[AUM] = []
    cursor = authority.head_hash
    for _ in range(MAX_SCAN_ITERATIONS + 1):
        if cursor == fork:
            path.reverse()
            return path
        aum = storage.get(cursor)
        if aum is None or aum.parent is None:
            raise StateError(f"AUM {hash_to_text(fork)} is not on this node's active chain")
        path.append(aum)
        cursor = aum.parent
    raise StateError("walking the active chain: iteration limit exceeded")


@dataclass(frozen=True)
class AddedKey:
    """A key still trusted today that a revoked key (or a key it added) brought in."""

    key_id: bytes
    by: bytes
    """The key that signed the update adding it."""
    aum_hash: bytes
    """The update that added it."""


def keys_added_by(
    authority: Authority, storage: Storage, revoked: Iterable[bytes], fork: bytes
) -> list[AddedKey]:
    """Keys still trusted today that *revoked* keys added after *fork*, transitively.

    An update signed by a revoked key (alone or with others) that brings
    new keys into the state taints them; updates signed by tainted keys
    taint further. Only keys still trusted at the head and not already in
    *revoked* are returned, in the order they were added.
    """
    tainted = set(revoked)
    state = compute_state_at(storage, fork)
    found: dict[bytes, AddedKey] = {}
    for aum in _active_path(authority, storage, fork):
        after = state.apply(aum)
        signer = next(
            (s.key_id for s in aum.signatures or () if (s.key_id or b"") in tainted), None
        )
        if signer is not None:
            before = {k.key_id for k in state.keys or ()}
            for k in after.keys or ():
                if k.key_id not in before and k.key_id not in tainted:
                    tainted.add(k.key_id)
                    found[k.key_id] = AddedKey(k.key_id, signer, aum.hash)
        state = after
    today = {k.key_id for k in authority.keys}
    return [a for a in found.values() if a.key_id in today]


def make_retroactive_revocation(
    authority: Authority,
    storage: Storage,
    remove_keys: Sequence[bytes],
    our_key: bytes,
    fork_from: bytes | None = None,
) -> AUM:
    """Build the unsigned forking checkpoint that revokes *remove_keys*.

    *our_key* is the ID of the key that will sign it first: it must not be
    one of *remove_keys* and must be trusted at the fork point, or the
    recovery could never be applied. The fork point is found as Tailscale
    finds it unless *fork_from* names it.
    """
    if not remove_keys:
        raise UsageError("no keys to revoke")
    revoked = set(remove_keys)
    if not any(k.key_id not in revoked for k in authority.keys):
        raise StateError("cannot revoke all trusted keys")
    if our_key in revoked:
        raise UsageError(
            f"this node's key {_key_text(our_key)} is among the keys to revoke: a key cannot "
            "sign its own revocation; start the recovery on another signing node"
        )
    if fork_from is None:
        if not any(authority.state.get_key(k) is not None for k in remove_keys):
            raise StateError("no provided key is currently trusted")
        try:
            parent = _fork_point(authority, storage, remove_keys, our_key)
        except TKAError as exc:
            raise type(exc)(f"finding parent: {exc}") from None
    else:
        parent = fork_from
        if storage.get(parent) is None:
            raise StateError(f"--fork-from: AUM {hash_to_text(parent)} is not stored here")
    fork_state = compute_state_at(storage, parent)
    if fork_state.get_key(our_key) is None:
        can = [_key_text(k.key_id) for k in fork_state.keys or () if k.key_id not in revoked]
        raise NotAuthorized(
            f"this node's key {_key_text(our_key)} was not trusted at the fork point "
            f"{hash_to_text(parent)}, so its signature would make the recovery invalid: "
            "start the recovery on a node whose key was trusted there "
            f"({', '.join(can) or 'none is left'})"
        )
    keys = tuple(k for k in authority.keys if k.key_id not in revoked)
    if not keys:
        raise StateError("cannot revoke all trusted keys")
    # Checkpoints never name a last AUM: their place is given by the parent.
    state = authority.state.replace(keys=keys, last_aum_hash=None)
    aum = AUM(AUMKind.CHECKPOINT, prev_aum_hash=parent, state=state)
    try:
        aum.static_validate()
    except ValidationError as exc:
        raise ValidationError(f"recovery AUM is invalid: {exc}") from None
    return aum


@dataclass(frozen=True)
class RecoverySigner:
    """One signature of a recovery AUM and whether it counts."""

    key_id: bytes
    votes: int
    """Its votes at the fork point (0 when it does not count)."""
    problem: str | None
    """Why it does not count (``None`` for a valid signer)."""


def _fork_state(storage: Storage, aum: AUM) -> State:
    if aum.message_kind != AUMKind.CHECKPOINT or aum.state is None:
        raise UsageError("not a recovery AUM (expected a checkpoint)")
    parent = aum.parent
    if parent is None or storage.get(parent) is None:
        raise StateError("the recovery AUM forks from an AUM this node does not hold")
    return compute_state_at(storage, parent)


def revoked_by(authority: Authority, storage: Storage, aum: AUM) -> set[bytes]:
    """The keys a recovery *aum* revokes: trusted by *authority* today, dropped by it.

    A key that was already removed before (trusted at the fork point, not
    today) is not "being revoked": the recovery only leaves it out.
    """
    _fork_state(storage, aum)  # refuses what is not a recovery of this chain
    kept = {k.key_id for k in (aum.state.keys if aum.state else None) or ()}
    return {k.key_id for k in authority.keys} - kept


def _signer_problem(key_id: bytes, fork_state: State, revoked: set[bytes]) -> str | None:
    if key_id in revoked:
        return "is being revoked by this recovery"
    if fork_state.get_key(key_id) is None:
        return "was not trusted at the fork point"
    return None


def recovery_signers(authority: Authority, storage: Storage, aum: AUM) -> list[RecoverySigner]:
    """Each signature of *aum* with its votes, or why it does not count.

    A signature counts when its key was trusted at the fork point, is not
    revoked by the recovery and the signature verifies.
    """
    fork_state = _fork_state(storage, aum)
    revoked = revoked_by(authority, storage, aum)
    out: list[RecoverySigner] = []
    seen: set[bytes] = set()
    for sig in aum.signatures or ():
        kid = sig.key_id or b""
        problem = _signer_problem(kid, fork_state, revoked)
        key = fork_state.get_key(kid)
        if problem is None and kid in seen:
            problem = "signed twice"
        if (
            problem is None
            and key is not None
            and not ed25519.verify_zip215(key.public or b"", aum.sig_hash, sig.signature or b"")
        ):
            problem = "has an invalid signature"
        seen.add(kid)
        votes = key.votes if problem is None and key is not None else 0
        out.append(RecoverySigner(kid, votes, problem))
    return out


def _refuse_bad_signers(signers: Sequence[RecoverySigner]) -> None:
    bad = [s for s in signers if s.problem is not None]
    if bad:
        what = "; ".join(f"{_key_text(s.key_id)} {s.problem}" for s in bad)
        raise NotAuthorized(
            f"the recovery carries signatures that make it invalid ({what}): "
            "start a new recovery with 'tka lock revoke-keys'"
        )


def cosign_recovery(
    aum: AUM,
    signer: Signer,
    authority: Authority | None = None,
    storage: Storage | None = None,
) -> AUM:
    """Add *signer*'s signatures to a recovery AUM.

    Refuses a key that already signed; with *authority* and *storage* also
    a key not trusted at the fork point, a key the recovery revokes, and a
    recovery already carrying such a signature.
    """
    signed = {s.key_id for s in aum.signatures or ()}
    for key_id in signer.key_ids:
        if key_id in signed:
            raise UsageError(f"key tlpub:{key_id.hex()} has already signed this recovery AUM")
    if authority is not None and storage is not None:
        fork_state = _fork_state(storage, aum)
        revoked = revoked_by(authority, storage, aum)
        for key_id in signer.key_ids:
            problem = _signer_problem(key_id, fork_state, revoked)
            if problem is not None:
                raise NotAuthorized(
                    f"this node's key {_key_text(key_id)} {problem}: its signature cannot "
                    "count; co-sign on a node whose key was trusted at the fork point "
                    f"{hash_to_text(aum.parent or b'')} and is not being revoked"
                )
        _refuse_bad_signers(recovery_signers(authority, storage, aum))
    return aum.with_signatures((*(aum.signatures or ()), *signer.sign_aum(aum.sig_hash)))


@dataclass(frozen=True)
class RecoveryCheck:
    """Whether a recovery AUM would win the fork it creates, and by how much."""

    wins: bool
    weight: int
    """Summed votes of its valid signers, in the fork point's state."""
    competing_weight: int
    """The weight of the strongest sibling it competes with (0 if none)."""
    reason: str
    signers: tuple[RecoverySigner, ...] = ()
    """Every signature, with why it does not count where it does not."""


def check_recovery(authority: Authority, storage: Storage, aum: AUM) -> RecoveryCheck:
    """Say whether *aum*, once informed, would be chosen over its siblings.

    A recovery with any signature that does not count never wins: a
    signature by a key not trusted at the fork point makes the AUM invalid,
    and a revoked key must not vouch for its own revocation.
    """
    parent = aum.parent
    state = _fork_state(storage, aum)
    assert parent is not None
    signers = tuple(recovery_signers(authority, storage, aum))
    siblings = [c for c in storage.children(parent) if c.hash != aum.hash]
    weight = sum(s.votes for s in signers)
    best = max((c.weight(state) for c in siblings), default=0)
    bad = [s for s in signers if s.problem is not None]
    if bad:
        what = "; ".join(f"{_key_text(s.key_id)} {s.problem}" for s in bad)
        return RecoveryCheck(False, weight, best, f"signatures that do not count: {what}", signers)
    wins = pick_next_aum(state, [*siblings, aum]) is aum
    if wins:
        reason = f"valid signers hold {weight} votes against {best} on the branch it replaces"
    else:
        reason = (
            f"valid signers hold {weight} votes but the branch it replaces has {best}: "
            "co-sign it with more trusted keys"
        )
    return RecoveryCheck(wins, weight, best, reason, signers)


def finish_recovery(authority: Authority, storage: Storage, aum: AUM) -> None:
    """Inform the co-signed recovery AUM, refusing one that would lose its fork."""
    verdict = check_recovery(authority, storage, aum)
    _refuse_bad_signers(verdict.signers)
    if not verdict.wins:
        raise StateError(f"recovery AUM would not take effect: {verdict.reason}")
    authority.inform(storage, [aum])
    if authority.head_hash != aum.hash:
        raise StateError("recovery AUM was stored but did not become the head")


@dataclass(frozen=True)
class RevocationPlan:
    """A recovery to start: the unsigned AUM and what it does and does not revoke."""

    aum: AUM
    """The unsigned forking checkpoint."""
    revoked: tuple[bytes, ...]
    """Every key it revokes (the keys asked for, plus the added ones with ``with_added``)."""
    added: tuple[AddedKey, ...]
    """Keys still trusted today that the asked-for keys added (transitively)."""


def plan_revocation(
    authority: Authority,
    storage: Storage,
    remove_keys: Sequence[bytes],
    our_key: bytes,
    fork_from: bytes | None = None,
    *,
    with_added: bool = False,
) -> RevocationPlan:
    """Build a recovery revoking *remove_keys* and say which keys they added.

    With *with_added* the keys they added (and the keys those added, ...)
    are revoked too; otherwise they stay trusted and are only reported.
    """
    asked = list(dict.fromkeys(remove_keys))
    remove = list(asked)
    for _ in range(len(authority.keys) + 1):
        aum = make_retroactive_revocation(authority, storage, remove, our_key, fork_from)
        assert aum.parent is not None
        added = keys_added_by(authority, storage, asked, aum.parent)
        new = [a.key_id for a in added if a.key_id not in remove]
        if not with_added or not new:
            return RevocationPlan(aum, tuple(remove), tuple(added))
        remove += new
    raise StateError("computing the keys to revoke: no fixed point")  # pragma: no cover
