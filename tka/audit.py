"""Verify an exported tailnet-lock chain end to end and report on it.

Sources:

* :func:`audit_log`: the text ``tailscale lock log --json`` prints (schema v1);
* :func:`audit_directory`: a node's AUM directory in Tailscale's on-disk layout;
* :func:`audit_bundle`: a ``tka-bundle/1`` export (:mod:`tka.bundle`);
* :func:`audit_aums`: any collection of AUMs, in any order, forks included;
* :func:`audit_bytes`: a file's content, a bundle or a lock log (told apart
  by the bundle's ``format`` member).

Verdicts:

``valid``
    Everything is consistent and the whole history replays from a genesis
    AUM (``Authority.bootstrap`` from it, then ``inform`` with the rest,
    parents first, every signature and hash link checked, forks resolved by
    Tailscale's rules). ``head`` and ``state`` give the result. Valid means
    "consistent with this genesis": the genesis itself is trusted as given,
    so compare its hash with one obtained another way.
``incomplete``
    Consistent, but the oldest AUM has a parent (the log was cut by
    ``--limit``, or the directory was compacted), so it cannot be verified
    from the start. When the part held starts at (or contains) a
    checkpoint, the AUMs after it are verified trusting that checkpoint; the
    result is in ``partial``.
``invalid``
    Anything else; ``reasons`` say why, each naming the message index and
    the AUM hash at fault where there is one (the oldest failing AUM first,
    for replay failures).

For ``lock log`` text, the checks and their order follow the conformance
harness exactly (see the ``verifier`` header of ``lock_log_json.json``):
strict JSON with SchemaVersion "1"; per message: Hash is base32 text, Raw is
padded base64url, Raw decodes to an AUM whose hash is Hash, Raw is that AUM's
canonical serialization (as text too), and the expanded AUM is what
Tailscale derives from Raw; then each message must name the next as its
parent; then the oldest must be a genesis (else ``incomplete``); then the
replay must succeed and end at message 0. Per-message failures are all
reported (one per message) and stop the audit before the link checks.

``AuditReport.to_json()`` keys (stable; new keys may be added):

* ``format``: ``"tka-audit/1"``; ``source``: what was audited;
* ``verdict``; ``reasons``: ``[{"text", "message_index", "aum"}]``;
* ``genesis``, ``head``: base32 hashes or null; ``aum_count``;
* ``state``: ``{"last_aum_hash", "state_id1", "state_id2",
  "disablement_values": [hex], "keys": [{"key": "tlpub:...", "kind", "votes", "meta"}]}``
  or null;
* ``history``: one entry per AUM, parents first: ``{"hash", "parent", "kind",
  "message_index", "signers", "keys_added", "keys_removed", "keys_changed",
  "trusted_keys", "total_votes", "active", "verified"}``;
* ``forks``: ``[{"parent", "branches": [{"hash", "kind", "weight"}], "winner",
  "rule", "active"}]``;
* ``warnings``: ``[{"code", "severity", "message", "aums", "keys"}]``;
* ``partial``: ``{"anchor", "ok", "head", "state", "error", "verified"}`` or null.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from tka.aum import AUM, HASH_SIZE, AUMKind, hash_to_text
from tka.authority import Authority, verify_aum
from tka.bundle import BUNDLE_FORMAT, Bundle
from tka.chain import pick_next_aum
from tka.errors import DecodeError, TKAError, UsageError, VerificationError
from tka.key import Key, key_kind_name
from tka.limits import CHECKPOINT_EVERY, MAX_DISABLEMENT_VALUES, MAX_KEYS, MAX_SCAN_ITERATIONS
from tka.lockjson import LockLog, b64url, expand_aum, parse_log
from tka.state import State
from tka.storage.memory import MemoryStore

__all__ = [
    "AUDIT_FORMAT",
    "KEY_COUNT_WARNING",
    "AUMRecord",
    "AuditReason",
    "AuditReport",
    "AuditWarning",
    "ForkBranch",
    "ForkRecord",
    "PartialVerification",
    "Verdict",
    "audit_aums",
    "audit_bundle",
    "audit_bytes",
    "audit_directory",
    "audit_log",
]

AUDIT_FORMAT: Final = "tka-audit/1"
#: Key count from which the key set is reported as near Tailscale's cap (90%).
KEY_COUNT_WARNING: Final = (MAX_KEYS * 9) // 10
#: Disablement-value count from which it is reported as near Tailscale's cap.
DISABLEMENT_COUNT_WARNING: Final = (MAX_DISABLEMENT_VALUES * 9) // 10
#: Active-chain length from which it is reported as near Tailscale's scan cap.
CHAIN_LENGTH_WARNING: Final = (MAX_SCAN_ITERATIONS * 9) // 10

Verdict = Literal["valid", "incomplete", "invalid"]
Severity = Literal["warning", "notice"]

_TRUNCATED_SET_REASON: Final = (
    "oldest AUM has a parent: history is truncated (e.g. by compaction), cannot verify from genesis"
)
_KNOWN_KINDS: Final = frozenset(int(k) for k in AUMKind)
_TRUNCATED_REASON: Final = (
    "oldest message has a parent: history is truncated (e.g. by --limit), "
    "cannot verify from genesis"
)


# -- report types ------------------------------------------------------------------


@dataclass(frozen=True)
class AuditReason:
    """Why a chain is not valid; ``str()`` gives the text alone."""

    text: str
    message_index: int | None = None  # position in the lock log, newest = 0
    aum: str | None = None  # base32 hash of the AUM at fault

    def __str__(self) -> str:
        return self.text

    def to_json(self) -> dict[str, Any]:
        """The reason as a JSON object."""
        return {"text": self.text, "message_index": self.message_index, "aum": self.aum}


@dataclass(frozen=True)
class AuditWarning:
    """Something an auditor should look at, even in a valid chain."""

    code: str  # stable identifier, e.g. "single-trusted-key"
    severity: Severity
    message: str
    aums: tuple[str, ...] = ()  # base32 hashes concerned
    keys: tuple[str, ...] = ()  # "tlpub:<hex>" keys concerned

    def to_json(self) -> dict[str, Any]:
        """The warning as a JSON object."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "aums": list(self.aums),
            "keys": list(self.keys),
        }


@dataclass(frozen=True)
class AUMRecord:
    """One AUM of the history and what it did to the trusted keys."""

    hash: str
    parent: str | None
    kind: str
    signers: tuple[str, ...]  # "tlpub:<hex>" of each signature, in order
    keys_added: tuple[str, ...] = ()
    keys_removed: tuple[str, ...] = ()
    keys_changed: tuple[str, ...] = ()  # votes or metadata changed
    trusted_keys: int | None = None  # keys trusted after it (None: not known)
    total_votes: int | None = None
    active: bool = False  # on the chain from the genesis/anchor to the head
    verified: bool | None = None  # None: could not be checked (before a cut)
    message_index: int | None = None  # lock-log position, newest = 0

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object."""
        return {
            "hash": self.hash,
            "parent": self.parent,
            "kind": self.kind,
            "message_index": self.message_index,
            "signers": list(self.signers),
            "keys_added": list(self.keys_added),
            "keys_removed": list(self.keys_removed),
            "keys_changed": list(self.keys_changed),
            "trusted_keys": self.trusted_keys,
            "total_votes": self.total_votes,
            "active": self.active,
            "verified": self.verified,
        }


@dataclass(frozen=True)
class ForkBranch:
    """One child of a fork point."""

    hash: str
    kind: str
    weight: int  # summed votes of its distinct trusted signers, in the parent's state


@dataclass(frozen=True)
class ForkRecord:
    """An AUM with several children, and which one Tailscale's fork choice follows."""

    parent: str
    branches: tuple[ForkBranch, ...]
    winner: str
    rule: Literal["votes", "remove-key", "lowest-hash"]  # what decided
    active: bool  # the fork point is on the active chain

    def to_json(self) -> dict[str, Any]:
        """The fork as a JSON object."""
        return {
            "parent": self.parent,
            "branches": [
                {"hash": b.hash, "kind": b.kind, "weight": b.weight} for b in self.branches
            ],
            "winner": self.winner,
            "rule": self.rule,
            "active": self.active,
        }


@dataclass(frozen=True)
class PartialVerification:
    """Verification of a cut history from a checkpoint trusted as given."""

    anchor: str  # the checkpoint the replay started from
    ok: bool
    head: str | None
    state: State | None
    error: str | None
    verified: int  # AUMs after the anchor that were checked

    def to_json(self) -> dict[str, Any]:
        """The partial result as a JSON object."""
        return {
            "anchor": self.anchor,
            "ok": self.ok,
            "head": self.head,
            "state": None if self.state is None else _state_json(self.state),
            "error": self.error,
            "verified": self.verified,
        }


@dataclass(frozen=True)
class AuditReport:
    """The outcome of an audit: verdict, reasons, result and findings."""

    source: str
    verdict: Verdict
    reasons: tuple[AuditReason, ...] = ()
    head: str | None = None  # verified head (valid verdict only)
    state: State | None = None  # state at the head (valid verdict only)
    genesis: str | None = None  # the trust anchor of a valid chain
    aum_count: int = 0
    history: tuple[AUMRecord, ...] = ()
    forks: tuple[ForkRecord, ...] = ()
    warnings: tuple[AuditWarning, ...] = field(default=())
    partial: PartialVerification | None = None

    @property
    def ok(self) -> bool:
        """Whether the verdict is ``valid``."""
        return self.verdict == "valid"

    def require_valid(self, allow_incomplete: bool = False) -> None:
        """Raise :class:`~tka.errors.VerificationError` unless the chain verified."""
        if self.verdict == "valid" or (allow_incomplete and self.verdict == "incomplete"):
            return
        why = "; ".join(r.text for r in self.reasons[:3]) or self.verdict
        raise VerificationError(f"audit: chain is {self.verdict}: {why}")

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (keys documented in the module docstring)."""
        return {
            "format": AUDIT_FORMAT,
            "source": self.source,
            "verdict": self.verdict,
            "reasons": [r.to_json() for r in self.reasons],
            "genesis": self.genesis,
            "head": self.head,
            "aum_count": self.aum_count,
            "state": None if self.state is None else _state_json(self.state),
            "history": [r.to_json() for r in self.history],
            "forks": [f.to_json() for f in self.forks],
            "warnings": [w.to_json() for w in self.warnings],
            "partial": None if self.partial is None else self.partial.to_json(),
        }

    def to_text(self) -> str:
        """A readable report, one fact per line (no trailing newline)."""
        return _render_text(self)


# -- small helpers ------------------------------------------------------------------


def _tlpub(data: bytes | None) -> str:
    return "tlpub:" + (data or b"").hex()


def _key_name(key: Key) -> str:
    return _tlpub(key.public)


def _keys_of(state: State | None) -> dict[str, Key]:
    return {} if state is None else {_key_name(k): k for k in state.keys or ()}


def _state_json(s: State) -> dict[str, Any]:
    return {
        "last_aum_hash": None if s.last_aum_hash is None else hash_to_text(s.last_aum_hash),
        "state_id1": s.state_id1,
        "state_id2": s.state_id2,
        "disablement_values": [(v or b"").hex() for v in s.disablement_values or ()],
        "keys": [
            {
                "key": _key_name(k),
                "kind": key_kind_name(k.kind),
                "votes": k.votes,
                "meta": None if k.meta is None else dict(sorted(k.meta.items())),
            }
            for k in s.keys or ()
        ],
    }


def _signers(aum: AUM) -> tuple[str, ...]:
    return tuple(_tlpub(s.key_id) for s in aum.signatures or ())


def _short(h: str | None) -> str:
    return "-" if h is None else h[:12] + "…"


# -- Go's padded base64url decoding, for the harness's error wording -----------------

_B64URL: Final = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
}
_B64URL_PLAIN: Final = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_B32: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def _go_b64url_decode(text: str) -> bytes:
    """Decode as Go's ``base64.URLEncoding.DecodeString`` does.

    The offsets in errors are Go's (``illegal base64 data at input byte N``);
    like Go, CR and LF are skipped and the unused low bits of the last
    quantum are not checked: the caller compares the text with the
    canonical encoding afterwards.
    """
    if len(text) % 4 == 0 and _B64URL_PLAIN.fullmatch(text):
        # The common case, decoded in C: whole quanta of the alphabet with at
        # most two '=' at the end, where both decoders agree byte for byte.
        return base64.urlsafe_b64decode(text)
    src = text.encode("utf-8", "surrogatepass")
    out = bytearray()
    si, n = 0, len(src)

    def corrupt(at: int) -> DecodeError:
        return DecodeError(f"illegal base64 data at input byte {at}")

    while si < n:
        dbuf = [0, 0, 0, 0]
        dlen = 4
        j = 0
        trailing: int | None = None
        while j < 4:
            if si == n:
                if j == 0:
                    return bytes(out)
                # Padded encoding: a partial quantum at the end is an error.
                raise corrupt(si - j)
            c = src[si]
            si += 1
            v = _B64URL.get(c)
            if v is not None:
                dbuf[j] = v
                j += 1
                continue
            if c in (0x0A, 0x0D):
                continue
            if c != 0x3D:  # '='
                raise corrupt(si - 1)
            if j < 2:
                raise corrupt(si - 1)
            if j == 2:
                # "==" expected; the first one is consumed.
                while si < n and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == n:
                    raise corrupt(n)
                if src[si] != 0x3D:
                    raise corrupt(si - 1)
                si += 1
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si < n:
                trailing = si
            dlen = j
            break
        val = dbuf[0] << 18 | dbuf[1] << 12 | dbuf[2] << 6 | dbuf[3]
        out.extend(bytes(((val >> 16) & 0xFF, (val >> 8) & 0xFF, val & 0xFF))[: dlen - 1])
        if trailing is not None:
            raise corrupt(trailing)
    return bytes(out)


def _check_hash_text(text: str) -> None:
    """Go's ``AUMHash.UnmarshalText`` checks, with its error wording."""
    raw = text.encode("utf-8", "surrogatepass")
    ln = len(raw) * 5 // 8
    if ln != HASH_SIZE:
        # Go prints the decoded length first and the text length second.
        raise DecodeError(f"tka.AUMHash.UnmarshalText: text wrong length: {ln}, want {len(raw)}")
    stripped = raw.replace(b"\r", b"").replace(b"\n", b"")
    for i, c in enumerate(stripped):
        if c not in _B32:
            raise DecodeError(f"tka.AUMHash.UnmarshalText: illegal base32 data at input byte {i}")


# -- verification core ----------------------------------------------------------------


@dataclass
class _Walk:
    """States reached walking a tree of AUMs from an anchor, verifying each step."""

    states: dict[bytes, State]  # state after each verified AUM
    failure: tuple[AUM, str] | None  # the first AUM (parents first) that failed
    unchecked: set[bytes]  # AUMs below a failure, never checked


def _parents_first(aums: Iterable[AUM], roots: Sequence[AUM]) -> list[AUM]:
    """Breadth-first from *roots*, siblings by hash: a deterministic parents-first order."""
    children: dict[bytes, list[AUM]] = {}
    for a in aums:
        p = a.parent
        if p is not None:
            children.setdefault(p, []).append(a)
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


def _walk(order: Sequence[AUM], anchor: AUM, anchor_state: State) -> _Walk:
    """Verify every AUM after *anchor* against the state at its parent (as ``Inform``)."""
    states = {anchor.hash: anchor_state}
    failure: tuple[AUM, str] | None = None
    unchecked: set[bytes] = set()
    for aum in order:
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


# -- history, forks, findings ----------------------------------------------------------


def _record(
    aum: AUM,
    before: State | None,
    after: State | None,
    active: bool,
    verified: bool | None,
    index: int | None,
) -> AUMRecord:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    if before is not None and after is not None:
        old, new = _keys_of(before), _keys_of(after)
        added = tuple(k for k in new if k not in old)
        removed = tuple(k for k in old if k not in new)
        changed = tuple(
            k
            for k in new
            if k in old and (old[k].votes, old[k].meta or {}) != (new[k].votes, new[k].meta or {})
        )
    elif after is not None:
        added = tuple(_keys_of(after))  # an anchor: every key is introduced here
    else:
        # Not verifiable: say what the AUM itself claims to do.
        if aum.message_kind == AUMKind.ADD_KEY and aum.key is not None:
            added = (_key_name(aum.key),)
        elif aum.message_kind == AUMKind.REMOVE_KEY:
            removed = (_tlpub(aum.key_id),)
        elif aum.message_kind == AUMKind.UPDATE_KEY:
            changed = (_tlpub(aum.key_id),)
    parent = aum.parent
    return AUMRecord(
        hash=aum.hash_text,
        parent=None if parent is None else hash_to_text(parent),
        kind=aum.kind_name,
        signers=_signers(aum),
        keys_added=added,
        keys_removed=removed,
        keys_changed=changed,
        trusted_keys=None if after is None else len(after.keys or ()),
        total_votes=None if after is None else sum(k.votes for k in after.keys or ()),
        active=active,
        verified=verified,
        message_index=index,
    )


def _forks(
    order: Sequence[AUM], states: dict[bytes, State], active: set[bytes]
) -> list[ForkRecord]:
    children: dict[bytes, list[AUM]] = {}
    for a in order:
        p = a.parent
        if p is not None:
            children.setdefault(p, []).append(a)
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


def _findings(
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
    names = [_key_name(k) for k in keys]
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
        for s in dict.fromkeys(_signers(a)):
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
    dup_sig = [a for a in everything if len(set(_signers(a))) != len(_signers(a))]
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
            removed_once.add(_tlpub(a.key_id))
        elif a.message_kind == AUMKind.ADD_KEY and a.key is not None:
            name = _key_name(a.key)
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
        _key_name(k): (k.kind, k.votes, tuple(sorted((k.meta or {}).items())))
        for k in state.keys or ()
    }


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


def _audit_tree(
    aums: Iterable[AUM],
    source: str,
    *,
    claimed_head: bytes | None = None,
    claim_name: str = "claimed head",
    prefer_root: bytes | None = None,
    index_of: dict[bytes, int] | None = None,
    extra: Sequence[AuditWarning] = (),
) -> AuditReport:
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
    if len(roots) > 1 and prefer_root is not None and prefer_root in {r.hash for r in roots}:
        # A node's directory may keep AUMs off its active chain; Tailscale
        # follows the chain through its last-active-ancestor hint.
        keep = next(r for r in roots if r.hash == prefer_root)
        stray = [r for r in roots if r is not keep]
        warnings.append(
            AuditWarning(
                "stray-aums",
                "notice",
                f"{len(stray)} AUM subtree(s) not connected to the active chain were ignored",
                aums=tuple(r.hash_text for r in stray),
            )
        )
        roots = [keep]
        reachable = {a.hash for a in _parents_first(by_hash.values(), roots)}
        by_hash = {h: a for h, a in by_hash.items() if h in reachable}
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
            warnings=tuple(warnings),
        )

    (root,) = roots
    order = _parents_first(by_hash.values(), roots)

    def idx(a: AUM) -> int | None:
        return None if index_of is None else index_of.get(a.hash)

    if root.parent is not None:
        return _incomplete(source, root, order, by_hash, count, warnings, idx, claimed_head)

    anchor_state = _anchor_state(root)
    walk = (
        _walk(order, root, anchor_state)
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
            )
            for a in order
        )
        return AuditReport(
            source,
            "invalid",
            (reason,),
            aum_count=count,
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
        )
        for a in order
    )
    forks = _forks(order, states, active)
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
    warnings.extend(_findings(chain, states, authority.state, root, forks, order))
    if mismatch:
        return AuditReport(
            source,
            "invalid",
            tuple(mismatch),
            genesis=root.hash_text,
            aum_count=count,
            history=history,
            forks=tuple(forks),
            warnings=tuple(warnings),
        )
    return AuditReport(
        source,
        "valid",
        (),
        head=authority.head.hash_text,
        state=authority.state,
        genesis=root.hash_text,
        aum_count=count,
        history=history,
        forks=tuple(forks),
        warnings=tuple(warnings),
    )


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
        walk = _walk(order, anchor, anchor_state)
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
        )
        for a in order
    )
    forks = _forks(order, states, active)
    if partial is not None and partial.ok and partial.state is not None and anchor is not None:
        tail = [a for a in chain if a.hash in states]
        warnings.extend(_findings(tail, states, partial.state, anchor, forks, order))
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
        history=history,
        forks=tuple(forks),
        warnings=tuple(warnings),
        partial=partial,
    )


# -- public entry points ----------------------------------------------------------------


def audit_aums(aums: Iterable[AUM], *, claimed_head: bytes | None = None) -> AuditReport:
    """Audit a collection of AUMs (any order, duplicates ignored, forks allowed).

    The AUMs must form one tree. From a genesis the whole tree is replayed
    (bootstrap, then inform parents first); *claimed_head*, when given, must
    be the head Tailscale's fork choice picks.
    """
    return _audit_tree(aums, "aums", claimed_head=claimed_head)


def audit_bundle(bundle: Bundle) -> AuditReport:
    """Audit a :class:`tka.bundle.Bundle`; its recorded head must be the verified head."""
    return _audit_tree(bundle.aums, "bundle", claimed_head=bundle.head, claim_name="bundle's head")


def audit_directory(path: str | os.PathLike[str]) -> AuditReport:
    """Audit a node's AUM directory in Tailscale's layout (read only).

    Every stored (not purged) AUM is verified. The head the node itself
    would open (with its last-active-ancestor hint, without re-checking
    signatures) is compared with the verified one.
    """
    base = os.fspath(path)
    if not os.path.isdir(base):
        raise UsageError(f"audit: {base} is not a directory")
    # Imported here: the filesystem backend is optional for the other sources.
    from tka.storage.fs import FilesystemStore

    warnings: list[AuditWarning] = []
    try:
        store = FilesystemStore(base)
    except TKAError as exc:
        return AuditReport("directory", "invalid", (AuditReason(f"opening the directory: {exc}"),))
    try:
        try:
            aums = [a for h in store.all_hashes() if (a := store.get(h)) is not None]
            hint = store.last_active_ancestor()
        except TKAError as exc:
            return AuditReport(
                "directory", "invalid", (AuditReason(f"reading the directory: {exc}"),)
            )
        node_head: bytes | None = None
        open_error: TKAError | None = None
        try:
            node_head = Authority.open(store).head_hash
        except TKAError as exc:
            open_error = exc
            warnings.append(
                AuditWarning(
                    "node-cannot-open",
                    "warning",
                    f"Tailscale would fail to open this directory: {exc}",
                )
            )
    finally:
        store.close()
    report = _audit_tree(aums, "directory", prefer_root=hint, extra=warnings)
    if open_error is not None:
        # Whatever its AUMs verify to, a directory that Tailscale's Open
        # (and Authority.open) refuses is not a usable authority.
        reason = AuditReason(f"Tailscale's nodes cannot open this directory: {open_error}")
        return replace(
            report,
            verdict="invalid",
            reasons=(reason, *report.reasons),
            head=None,
            state=None,
            genesis=None,
        )
    if node_head is not None and report.head is not None and hash_to_text(node_head) != report.head:
        report = _with_warning(
            report,
            AuditWarning(
                "node-head-differs",
                "warning",
                f"the node opens this directory at {hash_to_text(node_head)}, but the verified "
                f"head is {report.head}",
                aums=(hash_to_text(node_head), report.head),
            ),
        )
    return report


def _with_warning(report: AuditReport, w: AuditWarning) -> AuditReport:
    return replace(report, warnings=(*report.warnings, w))


def audit_log(text: str | bytes) -> AuditReport:
    """Audit ``tailscale lock log --json`` output with the conformance harness's rules.

    Never raises for bad input: a text that does not parse is an ``invalid``
    report whose reason names the place.
    """
    try:
        log = parse_log(text)
    except DecodeError as exc:
        return AuditReport("lock-log", "invalid", (AuditReason(str(exc)),))
    return _audit_parsed_log(log)


def audit_bytes(data: bytes | str) -> AuditReport:
    """Audit a file's content: a ``tka-bundle/1`` export or ``lock log --json`` text.

    The format is told apart by the bundle's ``format`` member; anything
    else is read as a lock log. Never raises for bad input.
    """
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            return AuditReport(
                "file", "invalid", (AuditReason(f"not UTF-8 text (byte {exc.start})"),)
            )
    if _looks_like_bundle(text):
        try:
            # surrogatepass: a lone surrogate becomes bytes the bundle
            # parser rejects as not UTF-8, instead of an encoding crash here.
            bundle = Bundle.from_json(text.encode("utf-8", "surrogatepass"))
        except TKAError as exc:
            return AuditReport("bundle", "invalid", (AuditReason(str(exc)),))
        return audit_bundle(bundle)
    return audit_log(text)


def _looks_like_bundle(text: str) -> bool:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("format") == BUNDLE_FORMAT


def _audit_parsed_log(log: LockLog) -> AuditReport:
    source = "lock-log"
    extra: list[AuditWarning] = []
    if log.response_warning:
        extra.append(
            AuditWarning(
                "schema-warning",
                "notice",
                f"the log carries a warning from Tailscale: {log.response_warning}",
            )
        )
    messages = log.messages or ()
    if not messages:
        return AuditReport(source, "invalid", (AuditReason("no messages"),), warnings=tuple(extra))

    reasons: list[AuditReason] = []
    aums: list[AUM] = []
    for i, m in enumerate(messages):
        bad = _check_message(i, m.hash, m.raw, m.aum)
        if isinstance(bad, AuditReason):
            reasons.append(bad)
        else:
            aums.append(bad)
    if reasons:
        return AuditReport(
            source, "invalid", tuple(reasons), aum_count=len(messages), warnings=tuple(extra)
        )

    for i in range(len(aums) - 1):
        if aums[i].parent != aums[i + 1].hash:
            reasons.append(
                AuditReason(
                    f"message {i}: PrevAUMHash does not reference message {i + 1}",
                    message_index=i,
                    aum=aums[i].hash_text,
                )
            )
    if reasons:
        return AuditReport(
            source, "invalid", tuple(reasons), aum_count=len(messages), warnings=tuple(extra)
        )

    index_of = {a.hash: i for i, a in enumerate(aums)}
    # Linear and parent-linked, so the tree audit replays exactly the
    # harness's Bootstrap(oldest) + Inform(rest, oldest first).
    return _audit_tree(
        aums,
        source,
        claimed_head=aums[0].hash,
        claim_name="newest message",
        index_of=index_of,
        extra=extra,
    )


def _check_message(i: int, hash_text: str, raw_text: str, expanded: Any) -> AUM | AuditReason:
    """The per-message checks, in the harness's order; the first failure is reported."""

    def fail(what: str, aum: str | None) -> AuditReason:
        return AuditReason(f"message {i}: {what}", message_index=i, aum=aum)

    try:
        _check_hash_text(hash_text)
    except DecodeError as exc:
        return fail(f"bad Hash text: {exc}", None)
    try:
        raw = _go_b64url_decode(raw_text)
    except DecodeError as exc:
        return fail(f"Raw is not padded base64url: {exc}", hash_text)
    try:
        aum = AUM.from_bytes(raw)
    except TKAError as exc:
        return fail(f"Raw does not decode as an AUM: {exc}", hash_text)
    if aum.hash_text != hash_text:
        return fail("Hash does not match the AUM in Raw", hash_text)
    if aum.canonical != raw:
        return fail("Raw is not the canonical serialization of the AUM", hash_text)
    if b64url(raw) != raw_text:
        # Go's decoder skips line breaks and ignores the spare low bits, so
        # several texts decode to the same bytes; only one is what Tailscale prints.
        return fail("Raw is not the canonical base64url text of its bytes", hash_text)
    if expand_aum(aum) != expanded:
        return fail("expanded AUM does not match Raw", hash_text)
    return aum


# -- text rendering ------------------------------------------------------------------------


def _render_text(r: AuditReport) -> str:
    lines: list[str] = []
    lines.append(f"tka audit ({r.source}, {r.aum_count} AUM(s)): {r.verdict.upper()}")
    for reason in r.reasons:
        where = ""
        if reason.aum:
            where = f"  [AUM {reason.aum}"
            if reason.message_index is not None:
                where += f", message {reason.message_index}"
            where += "]"
        lines.append(f"  reason: {reason.text}{where}")
    if r.genesis:
        lines.append(f"genesis: {r.genesis}  (the trust anchor: compare it out of band)")
    if r.head:
        lines.append(f"head:    {r.head}")
    if r.state is not None:
        lines.extend(_state_lines(r.state, "state at the head"))
    if r.partial is not None:
        p = r.partial
        lines.append(
            f"partial verification from checkpoint {p.anchor}: "
            + (f"ok, head {p.head}" if p.ok else f"FAILED: {p.error}")
        )
        if p.state is not None:
            lines.extend(_state_lines(p.state, "state at that head"))
    if r.history:
        lines.append("history (parents first):")
        for rec in r.history:
            mark = "*" if rec.active else " "
            check = {True: "", False: " FAILED", None: " unchecked"}[rec.verified]
            idx = "" if rec.message_index is None else f" #{rec.message_index}"
            parts = [f" {mark} {rec.hash[:16]}…{idx} {rec.kind}{check}"]
            if rec.signers:
                parts.append("signed by " + ", ".join(_short_key(s) for s in rec.signers))
            delta = (
                [f"+{_short_key(k)}" for k in rec.keys_added]
                + [f"-{_short_key(k)}" for k in rec.keys_removed]
                + [f"~{_short_key(k)}" for k in rec.keys_changed]
            )
            if delta:
                parts.append(" ".join(delta))
            if rec.trusted_keys is not None:
                parts.append(f"{rec.trusted_keys} key(s), {rec.total_votes} vote(s)")
            lines.append("; ".join(parts))
        if any(rec.active for rec in r.history):
            lines.append("  (* = on the active chain)")
    if r.forks:
        lines.append("forks:")
        for f in r.forks:
            lines.append(
                f"  at {f.parent}{' (active chain)' if f.active else ''}: "
                f"winner {f.winner} by {f.rule}"
            )
            for b in f.branches:
                lines.append(f"    {b.hash} {b.kind} weight {b.weight}")
    if r.warnings:
        lines.append("warnings:")
        for w in r.warnings:
            lines.append(f"  [{w.severity}] {w.code}: {w.message}")
            if w.aums:
                shown = ", ".join(w.aums[:5]) + (" …" if len(w.aums) > 5 else "")
                lines.append(f"      AUMs: {shown}")
            if w.keys:
                shown = ", ".join(w.keys[:5]) + (" …" if len(w.keys) > 5 else "")
                lines.append(f"      keys: {shown}")
    else:
        lines.append("warnings: none")
    return "\n".join(lines)


def _short_key(k: str) -> str:
    return k[:18] + "…" if len(k) > 18 else k


def _state_lines(s: State, title: str) -> list[str]:
    keys = s.keys or ()
    lines = [
        f"{title}: {len(keys)} trusted key(s), {len(s.disablement_values or ())} "
        f"disablement value(s), state IDs {s.state_id1}/{s.state_id2}"
    ]
    for k in keys:
        meta = ""
        if k.meta:
            meta = "  " + " ".join(f"{a}={b}" for a, b in sorted(k.meta.items()))
        lines.append(f"  {_key_name(k)}  votes {k.votes}{meta}")
    return lines
