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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from tka.aum import AUM, AUMKind, hash_to_text
from tka.authority import Authority, Signer
from tka.chain import compute_state_at, pick_next_aum
from tka.errors import StateError, TKAError, UsageError, ValidationError
from tka.limits import MAX_SCAN_ITERATIONS
from tka.storage import Storage

__all__ = [
    "RecoveryCheck",
    "check_recovery",
    "cosign_recovery",
    "finish_recovery",
    "make_retroactive_revocation",
]


def _fork_point(
    authority: Authority, storage: Storage, remove_keys: Sequence[bytes], our_key: bytes
) -> bytes:
    """Newest AUM on the active chain where no revoked key, but our key, is trusted."""
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


def make_retroactive_revocation(
    authority: Authority,
    storage: Storage,
    remove_keys: Sequence[bytes],
    our_key: bytes,
    fork_from: bytes | None = None,
) -> AUM:
    """Build the unsigned forking checkpoint that revokes *remove_keys*.

    *our_key* is the ID of the key that will sign it first. The fork point
    is found as Tailscale finds it unless *fork_from* names it.
    """
    if not remove_keys:
        raise UsageError("no keys to revoke")
    if fork_from is None:
        if not any(authority.state.get_key(k) is not None for k in remove_keys):
            raise StateError("no provided key is currently trusted")
        try:
            parent = _fork_point(authority, storage, remove_keys, our_key)
        except TKAError as exc:
            raise type(exc)(f"finding parent: {exc}") from None
    else:
        parent = fork_from
    revoked = set(remove_keys)
    keys = tuple(k for k in authority.keys if k.key_id not in revoked)
    if not keys:
        raise StateError("cannot revoke all trusted keys")
    # Checkpoints never name a last AUM: their place is given by the parent.
    state = replace(authority.state, keys=keys, last_aum_hash=None)
    aum = AUM(AUMKind.CHECKPOINT, prev_aum_hash=parent, state=state)
    try:
        aum.static_validate()
    except ValidationError as exc:
        raise ValidationError(f"recovery AUM is invalid: {exc}") from None
    return aum


def cosign_recovery(aum: AUM, signer: Signer) -> AUM:
    """Add *signer*'s signatures to a recovery AUM; refuses a key that already signed."""
    signed = {s.key_id for s in aum.signatures or ()}
    for key_id in signer.key_ids:
        if key_id in signed:
            raise UsageError(f"key tlpub:{key_id.hex()} has already signed this recovery AUM")
    return aum.with_signatures((*(aum.signatures or ()), *signer.sign_aum(aum.sig_hash)))


@dataclass(frozen=True)
class RecoveryCheck:
    """Whether a recovery AUM would win the fork it creates, and by how much."""

    wins: bool
    weight: int
    """Summed votes of its distinct trusted signers, in the fork point's state."""
    competing_weight: int
    """The weight of the strongest sibling it competes with (0 if none)."""
    reason: str


def check_recovery(authority: Authority, storage: Storage, aum: AUM) -> RecoveryCheck:
    """Say whether *aum*, once informed, would be chosen over its siblings."""
    parent = aum.parent
    if parent is None or storage.get(parent) is None:
        raise StateError("the recovery AUM forks from an AUM this node does not hold")
    state = compute_state_at(storage, parent)
    siblings = [c for c in storage.children(parent) if c.hash != aum.hash]
    weight = aum.weight(state)
    best = max((c.weight(state) for c in siblings), default=0)
    wins = pick_next_aum(state, [*siblings, aum]) is aum
    if wins:
        reason = f"signers hold {weight} votes against {best} on the branch it replaces"
    else:
        reason = (
            f"signers hold {weight} votes but the branch it replaces has {best}: "
            "co-sign it with more trusted keys"
        )
    return RecoveryCheck(wins, weight, best, reason)


def finish_recovery(authority: Authority, storage: Storage, aum: AUM) -> None:
    """Inform the co-signed recovery AUM, refusing one that would lose its fork."""
    verdict = check_recovery(authority, storage, aum)
    if not verdict.wins:
        raise StateError(f"recovery AUM would not take effect: {verdict.reason}")
    authority.inform(storage, [aum])
    if authority.head_hash != aum.hash:
        raise StateError("recovery AUM was stored but did not become the head")
