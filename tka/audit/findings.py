"""Findings: what an auditor should look at in a chain that verifies.

Pure functions over the active chain and the states reached along it; the
warnings they return go into :attr:`AuditReport.warnings` with stable codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from tka.aum import AUM, HASH_SIZE, AUMKind
from tka.limits import CHECKPOINT_EVERY, MAX_DISABLEMENT_VALUES, MAX_KEYS, MAX_SCAN_ITERATIONS
from tka.state import State

from .report import AuditWarning, ForkRecord, key_name, signers, tlpub

__all__ = [
    "CHAIN_LENGTH_WARNING",
    "DISABLEMENT_COUNT_WARNING",
    "KEY_COUNT_WARNING",
    "findings",
]

#: Key count from which the key set is reported as near Tailscale's cap (90%).
KEY_COUNT_WARNING: Final = (MAX_KEYS * 9) // 10
#: Disablement-value count from which it is reported as near Tailscale's cap.
DISABLEMENT_COUNT_WARNING: Final = (MAX_DISABLEMENT_VALUES * 9) // 10
#: Active-chain length from which it is reported as near Tailscale's scan cap.
CHAIN_LENGTH_WARNING: Final = (MAX_SCAN_ITERATIONS * 9) // 10

_KNOWN_KINDS: Final = frozenset(int(k) for k in AUMKind)


def findings(
    chain: Sequence[AUM],
    states: dict[bytes, State],
    head_state: State,
    anchor: AUM,
    forks: Sequence[ForkRecord],
    everything: Sequence[AUM],
) -> list[AuditWarning]:
    """What an auditor should look at, over the active chain and the head state."""
    out: list[AuditWarning] = []
    keys = head_state.keys or ()
    names = [key_name(k) for k in keys]
    total = sum(k.votes for k in keys)

    # Key-set size: Tailscale refuses checkpoints with more than MAX_KEYS keys,
    # and the builder checkpoints every 50 AUMs, so a key set at the cap can
    # leave the authority unable to change at all.
    peak, peak_at = 0, anchor
    for a in chain:
        st = states.get(a.hash)
        if st is not None and len(st.keys or ()) > peak:
            peak, peak_at = len(st.keys or ()), a
    if peak >= KEY_COUNT_WARNING:
        out.append(
            AuditWarning(
                "key-count-near-limit",
                "warning",
                f"the key set reaches {peak} keys ({len(keys)} at the head), near Tailscale's "
                f"limit of {MAX_KEYS}: at the limit a checkpoint cannot be made and the "
                "authority can become impossible to change; remove unused keys",
                aums=(peak_at.hash_text,),
            )
        )

    if len(keys) == 1:
        out.append(
            AuditWarning(
                "single-trusted-key",
                "warning",
                "only one key is trusted: losing it leaves the authority unchangeable "
                "(only disablement remains), and whoever holds it controls tailnet lock alone",
                keys=tuple(names),
            )
        )
    elif len(keys) > 1:
        for k, name in zip(keys, names, strict=True):
            if k.votes * 2 > total:
                out.append(
                    AuditWarning(
                        "vote-majority",
                        "warning",
                        f"{name} holds {k.votes} of {total} votes: it alone outweighs every "
                        "other key when forks are resolved (it can win a retroactive "
                        "revocation on its own)",
                        keys=(name,),
                    )
                )
    heavy = [(n, k.votes) for k, n in zip(keys, names, strict=True) if k.votes > 1]
    if heavy:
        out.append(
            AuditWarning(
                "unusual-votes",
                "notice",
                "keys with more than one vote (Tailscale gives every key 1 unless set "
                "explicitly): " + ", ".join(f"{n} ({v})" for n, v in heavy),
                keys=tuple(n for n, _ in heavy),
            )
        )

    values = head_state.disablement_values or ()
    if len(values) == 1:
        out.append(
            AuditWarning(
                "single-disablement-value",
                "warning",
                "only one disablement value: a single secret can switch tailnet lock off for "
                "the whole tailnet, and if it is lost there is no other; consider several, "
                "held by different people",
            )
        )

    if len(values) >= DISABLEMENT_COUNT_WARNING:
        out.append(
            AuditWarning(
                "many-disablement-values",
                "notice",
                f"{len(values)} disablement values (Tailscale allows {MAX_DISABLEMENT_VALUES}): "
                "each is a secret that can switch tailnet lock off",
            )
        )

    # Signers no longer trusted at the head: what they signed stays in force.
    removed_signers: dict[str, list[str]] = {}
    trusted_now = set(names)
    for a in chain:
        for s in dict.fromkeys(signers(a)):
            if s not in trusted_now:
                removed_signers.setdefault(s, []).append(a.hash_text)
    if removed_signers:
        aums = tuple(dict.fromkeys(h for hs in removed_signers.values() for h in hs))
        out.append(
            AuditWarning(
                "signed-by-removed-key",
                "warning",
                f"{len(aums)} AUM(s) on the active chain were signed by key(s) no longer "
                "trusted at the head; their changes stay in force. If a key was removed "
                "because it was compromised, review them (a retroactive revocation can undo "
                "them)",
                aums=aums,
                keys=tuple(removed_signers),
            )
        )

    # Checkpoints after the anchor normally repeat the state; one that changes
    # keys or disablement values rewrote trust wholesale.
    prev: State | None = None
    for a in chain:
        st = states.get(a.hash)
        if (
            a is not anchor
            and a.message_kind == AUMKind.CHECKPOINT
            and prev is not None
            and st is not None
        ):
            if _key_table(prev) != _key_table(st):
                out.append(
                    AuditWarning(
                        "checkpoint-changed-keys",
                        "warning",
                        f"checkpoint {a.hash_text} changes the trusted keys instead of "
                        "restating them (a retroactive revocation, or a reset of trust)",
                        aums=(a.hash_text,),
                    )
                )
            if set(prev.disablement_values or ()) != set(st.disablement_values or ()):
                out.append(
                    AuditWarning(
                        "disablement-values-changed",
                        "warning",
                        f"checkpoint {a.hash_text} changes the disablement values",
                        aums=(a.hash_text,),
                    )
                )
        prev = st

    if forks:
        out.append(
            AuditWarning(
                "fork",
                "warning",
                f"{len(forks)} fork point(s): several AUMs share a parent (concurrent "
                "changes, or a retroactive revocation); see forks for the branch that won",
                aums=tuple(f.parent for f in forks),
            )
        )
        ties = [f for f in forks if f.rule != "votes"]
        if ties:
            out.append(
                AuditWarning(
                    "fork-tie-break",
                    "warning",
                    f"{len(ties)} fork(s) decided by a tie-break ("
                    + ", ".join(sorted({f.rule for f in ties}))
                    + ") rather than by votes",
                    aums=tuple(f.parent for f in ties),
                )
            )

    odd_kinds = [a for a in everything if a.message_kind not in _KNOWN_KINDS]
    if odd_kinds:
        out.append(
            AuditWarning(
                "unknown-aum-kind",
                "notice",
                "AUMs of kinds this version does not know (Tailscale applies them as no-ops): "
                + ", ".join(sorted({a.kind_name for a in odd_kinds})),
                aums=tuple(a.hash_text for a in odd_kinds),
            )
        )
    noops = [a for a in everything if a.message_kind in (AUMKind.NO_OP, AUMKind.INVALID)]
    if noops:
        out.append(
            AuditWarning(
                "no-op-aum",
                "notice",
                f"{len(noops)} AUM(s) of kind no-op/invalid, which Tailscale only makes in tests",
                aums=tuple(a.hash_text for a in noops),
            )
        )
    dup_sig = [a for a in everything if len(set(signers(a))) != len(signers(a))]
    if dup_sig:
        out.append(
            AuditWarning(
                "duplicate-signature",
                "notice",
                "AUM(s) signed more than once by the same key (the votes count once)",
                aums=tuple(a.hash_text for a in dup_sig),
            )
        )
    odd_prev = [a for a in everything if a.prev_aum_hash and len(a.prev_aum_hash) != HASH_SIZE]
    if odd_prev:
        out.append(
            AuditWarning(
                "odd-parent-hash-length",
                "warning",
                f"AUM(s) whose PrevAUMHash is not {HASH_SIZE} bytes (Tailscale truncates or "
                "zero-pads it to find the parent; the hash covers the bytes as written)",
                aums=tuple(a.hash_text for a in odd_prev),
            )
        )

    if len(chain) >= CHAIN_LENGTH_WARNING:
        out.append(
            AuditWarning(
                "chain-near-scan-limit",
                "warning",
                f"the active chain holds {len(chain)} AUMs; Tailscale gives up walking chains "
                f"longer than {MAX_SCAN_ITERATIONS} AUMs (compaction keeps nodes below it)",
            )
        )
    run, longest = 0, 0
    for a in chain:
        run = 0 if a.message_kind == AUMKind.CHECKPOINT else run + 1
        longest = max(longest, run)
    if longest > CHECKPOINT_EVERY:
        out.append(
            AuditWarning(
                "sparse-checkpoints",
                "notice",
                f"{longest} AUMs in a row without a checkpoint; Tailscale's builder adds one "
                f"every {CHECKPOINT_EVERY}, so these were made by other software",
            )
        )

    removed_once: set[str] = set()
    readded: list[str] = []
    for a in chain:
        if a.message_kind == AUMKind.REMOVE_KEY:
            removed_once.add(tlpub(a.key_id))
        elif a.message_kind == AUMKind.ADD_KEY and a.key is not None:
            name = key_name(a.key)
            if name in removed_once:
                readded.append(name)
    if readded:
        out.append(
            AuditWarning(
                "key-readded",
                "notice",
                "key(s) removed and later trusted again: " + ", ".join(readded),
                keys=tuple(readded),
            )
        )
    return out


def _key_table(state: State) -> dict[str, tuple[int, int, tuple[tuple[str, str], ...]]]:
    return {
        key_name(k): (k.kind, k.votes, tuple(sorted((k.meta or {}).items())))
        for k in state.keys or ()
    }
