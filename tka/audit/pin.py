"""Pinned continuity: today's chain must extend the one recorded last time.

A pin file (``tka-pin/1``, JSON) records a head that was audited as valid,
the chain's genesis, the active chain from the genesis to that head, and
the exact state there::

    {
      "format": "tka-pin/1",
      "head": "<base32>", "genesis": "<base32>",
      "chain_length": 12,                   # AUMs from the genesis to the head
      "chain": ["<base32>", ...],           # that active chain, oldest first
      "state": {...},                       # readable, as in the audit report
      "state_cbor": "<base64>",             # the same state, exactly
      "pinned_at": "2026-01-01T00:00:00Z",  # when this head was recorded
      "source": "log.json"
    }

:func:`check_pin` compares a new audit with it. The new chain passes only
when the pinned head is on its active chain; otherwise the reason names
both heads and what happened: a rollback behind the pin, a rewritten
history, another genesis, or a fork whose winning branch abandoned the
pinned head. A source cut short (a lock log at ``--limit``) is checked from
the pinned state, as strictly as a replay from the genesis, when it reaches
back to the pinned head; when it does not, the check says so and which
``--limit`` it takes, rather than guessing. On success it lists what changed
since the pin: keys added, removed or re-weighted, disablement values
changed, and every AUM with its signing keys.

A pin file is written atomically (temporary file, fsync, rename), so a
crash leaves the old pin or the new one, never a mix.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from tka import codec
from tka._fileutil import atomic_write
from tka.aum import AUM, hash_from_text, hash_to_text
from tka.errors import DecodeError, TKAError
from tka.state import State

from .report import AuditReport, AUMRecord, keys_of, signers, state_json
from .sources import UnreadableInput, decode_text
from .verify import Progress, verify_from

__all__ = [
    "MAX_PIN_BYTES",
    "PIN_FORMAT",
    "AUMChange",
    "KeyChange",
    "Pin",
    "PinCheck",
    "PinStatus",
    "StateChanges",
    "check_pin",
    "load_pin",
    "save_pin",
    "state_changes",
]

PIN_FORMAT: Final = "tka-pin/1"
#: Largest pin file read (a chain of ~200 000 AUMs).
MAX_PIN_BYTES: Final = 16 * 1024 * 1024

PinStatus = Literal[
    "created",  # no pin yet: this audit's head was recorded
    "not-created",  # no pin yet, and this audit cannot start one
    "unchanged",  # the head is the pinned head
    "extends",  # the pinned head is on the new active chain, behind the head
    "rollback",  # the new head is behind the pinned head on the pinned chain
    "rewritten",  # same genesis, the pinned head is gone from the new chain
    "other-genesis",  # the new chain starts elsewhere
    "abandoned-fork",  # the pinned head is held but the fork choice leaves it
    "invalid-after-pin",  # an AUM after the pinned head does not verify
    "not-reached",  # the source is cut before the pinned head: undecided
    "not-checked",  # the source itself does not verify
]

_OK_STATUSES: Final = frozenset({"created", "unchanged", "extends"})


@dataclass(frozen=True)
class Pin:
    """A recorded head: what the next audit must extend."""

    head: str
    genesis: str
    chain: tuple[str, ...]  # active chain, genesis first, head last
    state: State
    pinned_at: str
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """The pin file's content."""
        return {
            "format": PIN_FORMAT,
            "head": self.head,
            "genesis": self.genesis,
            "chain_length": len(self.chain),
            "chain": list(self.chain),
            "state": state_json(self.state),
            "state_cbor": base64.b64encode(codec.encode(self.state.to_cbor_obj())).decode(),
            "pinned_at": self.pinned_at,
            "source": self.source,
        }


@dataclass(frozen=True)
class KeyChange:
    """A trusted key whose presence, votes or metadata changed."""

    key: str
    votes_before: int | None  # None: not trusted before
    votes_after: int | None  # None: not trusted after
    meta_changed: bool = False

    def to_json(self) -> dict[str, Any]:
        """The change as a JSON object."""
        return {
            "key": self.key,
            "votes_before": self.votes_before,
            "votes_after": self.votes_after,
            "meta_changed": self.meta_changed,
        }


@dataclass(frozen=True)
class StateChanges:
    """What differs between two states: keys and disablement values."""

    keys_added: tuple[KeyChange, ...] = ()
    keys_removed: tuple[KeyChange, ...] = ()
    keys_reweighted: tuple[KeyChange, ...] = ()  # votes or metadata changed
    disablement_added: tuple[str, ...] = ()  # hex
    disablement_removed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether nothing changed."""
        return not (
            self.keys_added
            or self.keys_removed
            or self.keys_reweighted
            or self.disablement_added
            or self.disablement_removed
        )

    def to_json(self) -> dict[str, Any]:
        """The changes as a JSON object."""
        return {
            "keys_added": [k.to_json() for k in self.keys_added],
            "keys_removed": [k.to_json() for k in self.keys_removed],
            "keys_reweighted": [k.to_json() for k in self.keys_reweighted],
            "disablement_values_added": list(self.disablement_added),
            "disablement_values_removed": list(self.disablement_removed),
        }


@dataclass(frozen=True)
class AUMChange:
    """One AUM applied since the pin, with who signed it and what it did to the keys."""

    hash: str
    kind: str
    signers: tuple[str, ...]
    keys_added: tuple[str, ...] = ()
    keys_removed: tuple[str, ...] = ()
    keys_changed: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The AUM as a JSON object."""
        return {
            "hash": self.hash,
            "kind": self.kind,
            "signers": list(self.signers),
            "keys_added": list(self.keys_added),
            "keys_removed": list(self.keys_removed),
            "keys_changed": list(self.keys_changed),
        }


@dataclass(frozen=True)
class PinCheck:
    """The comparison of an audit with a pin file."""

    path: str
    status: PinStatus
    reasons: tuple[str, ...] = ()  # why it fails (empty when it passes)
    pinned_head: str | None = None
    new_head: str | None = None
    pinned_at: str | None = None
    changes: StateChanges | None = None
    aums_since: tuple[AUMChange, ...] = ()
    suggested_limit: int | None = None  # for "not-reached": the smallest --limit worth trying
    verified_from_pin: bool = False  # a cut source was checked from the pinned state
    state: State | None = None  # the state at the new head, when known
    new_pin: Pin | None = field(default=None, repr=False)  # what to record if all else passes
    updated: bool = False  # the pin file was moved forward
    pinned_genesis: str | None = None  # the genesis the pin file records

    @property
    def ok(self) -> bool:
        """Whether the new chain continues the pinned one."""
        return self.status in _OK_STATUSES

    def to_json(self) -> dict[str, Any]:
        """The check as a JSON object (see :mod:`tka.audit` for the keys)."""
        return {
            "path": self.path,
            "status": self.status,
            "ok": self.ok,
            "reasons": list(self.reasons),
            "pinned_head": self.pinned_head,
            "new_head": self.new_head,
            "pinned_at": self.pinned_at,
            "verified_from_pin": self.verified_from_pin,
            "changes": None if self.changes is None else self.changes.to_json(),
            "aums_since": [a.to_json() for a in self.aums_since],
            "suggested_limit": self.suggested_limit,
            "updated": self.updated,
        }


# -- the file ---------------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def load_pin(path: str) -> Pin | None:
    """Read a pin file; ``None`` when there is none yet.

    Raises :class:`~tka.audit.sources.UnreadableInput` naming the file when
    it exists but cannot be read or is not a valid pin.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PIN_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnreadableInput(f"pin file {path}: {exc.strerror}") from None
    if len(data) > MAX_PIN_BYTES:
        raise UnreadableInput(f"pin file {path}: larger than {MAX_PIN_BYTES // (1024 * 1024)} MiB")
    try:
        return _parse_pin(decode_text(data, f"pin file {path}"))
    except (DecodeError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise UnreadableInput(
            f"pin file {path} is damaged ({exc}); move it away to start a new pin"
        ) from None


def _parse_pin(text: str) -> Pin:
    doc = json.loads(text)
    if not isinstance(doc, dict) or doc.get("format") != PIN_FORMAT:
        raise ValueError(f"not a {PIN_FORMAT} file")
    head, genesis = doc["head"], doc["genesis"]
    chain = doc["chain"]
    if not isinstance(chain, list) or not chain:
        raise ValueError("chain is not a list of hashes")
    for h in (head, genesis, *chain):
        hash_from_text(h)  # checks each is an AUM hash
    if chain[0] != genesis or chain[-1] != head:
        raise ValueError("chain does not run from the genesis to the head")
    try:
        state = State.from_cbor_obj(codec.parse(base64.b64decode(doc["state_cbor"], validate=True)))
    except TKAError as exc:
        raise DecodeError(f"state_cbor: {exc}") from None
    if state.last_aum_hash is None or hash_to_text(state.last_aum_hash) != head:
        raise ValueError("state is not the state at the head")
    pinned_at = doc.get("pinned_at", "")
    source = doc.get("source", "")
    if not isinstance(pinned_at, str) or not isinstance(source, str):
        raise ValueError("pinned_at and source must be text")
    return Pin(head, genesis, tuple(chain), state, pinned_at, source)


def save_pin(path: str, pin: Pin) -> None:
    """Write *pin* to *path* atomically (the old file or the new, never a part).

    Raises :class:`~tka.audit.sources.UnreadableInput` naming the file when
    it cannot be written (the command line's exit 3, as for a pin it cannot
    read).
    """
    data = (json.dumps(pin.to_json(), indent=1) + "\n").encode()
    try:
        atomic_write(os.path.abspath(path), data, mode=0o644, prefix=".tka-pin-")
    except OSError as exc:
        raise UnreadableInput(f"cannot write the pin file {path}: {exc.strerror}") from None


# -- changes ----------------------------------------------------------------------------


def state_changes(before: State, after: State) -> StateChanges:
    """Keys added, removed or re-weighted and disablement values changed from *before*."""
    old, new = keys_of(before), keys_of(after)
    added = tuple(KeyChange(n, None, k.votes) for n, k in new.items() if n not in old)
    removed = tuple(KeyChange(n, k.votes, None) for n, k in old.items() if n not in new)
    reweighted = tuple(
        KeyChange(n, old[n].votes, k.votes, (old[n].meta or {}) != (k.meta or {}))
        for n, k in new.items()
        if n in old and (old[n].votes, old[n].meta or {}) != (k.votes, k.meta or {})
    )
    dv_old = [(v or b"").hex() for v in before.disablement_values or ()]
    dv_new = [(v or b"").hex() for v in after.disablement_values or ()]
    return StateChanges(
        added,
        removed,
        reweighted,
        tuple(v for v in dv_new if v not in dv_old),
        tuple(v for v in dv_old if v not in dv_new),
    )


def _change_of(rec: AUMRecord) -> AUMChange:
    return AUMChange(
        rec.hash, rec.kind, rec.signers, rec.keys_added, rec.keys_removed, rec.keys_changed
    )


def _change_from_states(aum: AUM, before: State, after: State) -> AUMChange:
    ch = state_changes(before, after)
    return AUMChange(
        aum.hash_text,
        aum.kind_name,
        signers(aum),
        tuple(k.key for k in ch.keys_added),
        tuple(k.key for k in ch.keys_removed),
        tuple(k.key for k in ch.keys_reweighted),
    )


# -- the check --------------------------------------------------------------------------


def _active_chain(report: AuditReport) -> list[AUMRecord]:
    """The report's active chain, oldest first."""
    by_hash = {r.hash: r for r in report.history}
    out: list[AUMRecord] = []
    cursor = report.head
    while cursor is not None and cursor in by_hash and len(out) <= len(by_hash):
        rec = by_hash[cursor]
        out.append(rec)
        cursor = rec.parent
    out.reverse()
    return out


def _newest(report: AuditReport) -> str | None:
    """The head a source claims or reaches, even when it does not verify from a genesis."""
    if report.head is not None:
        return report.head
    if report.partial is not None and report.partial.ok:
        return report.partial.head
    for rec in report.history:
        if rec.message_index == 0:
            return rec.hash
    return None


def check_pin(
    path: str,
    report: AuditReport,
    *,
    source: str = "",
    progress: Progress | None = None,
) -> PinCheck:
    """Compare *report* with the pin at *path* (recording nothing: see :func:`save_pin`).

    With no pin file yet, a valid audit gives status ``created`` and the pin
    to record in :attr:`PinCheck.new_pin`. Raises
    :class:`~tka.audit.sources.UnreadableInput` for a damaged pin file.
    """
    pin = load_pin(path)
    new_head = _newest(report)
    if pin is None:
        return _first_pin(path, report, source)
    base = PinCheck(
        path, "not-checked", pinned_head=pin.head, new_head=new_head, pinned_at=pin.pinned_at
    )
    if report.verdict == "invalid":
        return _fail(base, "not-checked", "the source does not verify, so it cannot extend the pin")
    held = {r.hash: r for r in report.history}
    if report.verdict == "valid":
        return replace(_check_full(base, pin, report, held, source), pinned_genesis=pin.genesis)
    checked = _check_cut(base, pin, report, held, source, progress)
    return replace(checked, pinned_genesis=pin.genesis)


def _fail(base: PinCheck, status: PinStatus, reason: str, **extra: Any) -> PinCheck:
    return PinCheck(
        base.path,
        status,
        (reason,),
        base.pinned_head,
        base.new_head,
        base.pinned_at,
        **extra,
    )


def _first_pin(path: str, report: AuditReport, source: str) -> PinCheck:
    if report.verdict != "valid" or report.state is None or report.head is None:
        why = (
            "the source does not reach back to the genesis (a log cut by --limit, or a "
            "compacted directory): a pin starts from a chain verified from its genesis, so "
            "rerun with a larger --limit"
            if report.verdict == "incomplete"
            else "the source does not verify"
        )
        return PinCheck(path, "not-created", (f"no pin recorded: {why}",))
    assert report.genesis is not None
    chain = tuple(r.hash for r in _active_chain(report))
    pin = Pin(report.head, report.genesis, chain, report.state, _now(), source)
    return PinCheck(path, "created", new_head=report.head, state=report.state, new_pin=pin)


def _success(
    base: PinCheck,
    pin: Pin,
    new_head: str,
    chain: tuple[str, ...],
    state: State,
    aums_since: tuple[AUMChange, ...],
    source: str,
    *,
    from_pin: bool,
) -> PinCheck:
    if new_head == pin.head:
        return PinCheck(
            base.path,
            "unchanged",
            pinned_head=pin.head,
            new_head=new_head,
            pinned_at=pin.pinned_at,
            changes=StateChanges(),
            verified_from_pin=from_pin,
            state=state,
        )
    new_pin = Pin(new_head, pin.genesis, chain, state, _now(), source)
    return PinCheck(
        base.path,
        "extends",
        pinned_head=pin.head,
        new_head=new_head,
        pinned_at=pin.pinned_at,
        changes=state_changes(pin.state, state),
        aums_since=aums_since,
        verified_from_pin=from_pin,
        state=state,
        new_pin=new_pin,
    )


def _check_full(
    base: PinCheck, pin: Pin, report: AuditReport, held: dict[str, AUMRecord], source: str
) -> PinCheck:
    """A source verified from its genesis: the pinned head must be on its active chain."""
    assert report.head is not None and report.state is not None
    head = report.head
    if report.genesis != pin.genesis:
        return _fail(
            base,
            "other-genesis",
            f"the chain starts at another genesis ({report.genesis}, the pin's is "
            f"{pin.genesis}): pinned head {pin.head}, new head {head}",
        )
    active = _active_chain(report)
    position = {r.hash: i for i, r in enumerate(active)}
    if pin.head in position:
        since = tuple(_change_of(r) for r in active[position[pin.head] + 1 :])
        chain = tuple(r.hash for r in active)
        return _success(base, pin, head, chain, report.state, since, source, from_pin=False)
    if pin.head in held:
        return _fail(base, "abandoned-fork", _abandoned(pin, report, held, head))
    return _fail(base, *_gone(pin, head, [r.hash for r in active]))


def _abandoned(pin: Pin, report: AuditReport, held: dict[str, AUMRecord], head: str) -> str:
    """Why the pinned head, still held, is not on the active chain: the fork that left it."""
    ancestors: list[str] = []
    cursor: str | None = pin.head
    while cursor is not None and cursor in held and len(ancestors) <= len(held):
        ancestors.append(cursor)
        cursor = held[cursor].parent
    forks = {f.parent: f for f in report.forks}
    for h in ancestors:
        f = forks.get(h)
        if f is not None and f.active:
            return (
                f"the pinned head {pin.head} is on a branch the fork choice abandoned: at fork "
                f"{f.parent} the branch {f.winner} won by {f.rule}; new head {head}"
            )
    return f"the pinned head {pin.head} is held but not on the active chain (new head {head})"


def _gone(pin: Pin, head: str, new_chain: list[str]) -> tuple[PinStatus, str]:
    """The pinned head is not in the source: a rollback or a rewrite (the pin's chain tells)."""
    pinned = {h: i for i, h in enumerate(pin.chain)}
    if head in pinned:
        behind = len(pin.chain) - 1 - pinned[head]
        return (
            "rollback",
            f"rollback: the new head {head} is {behind} AUM(s) behind the pinned head "
            f"{pin.head} on the pinned chain",
        )
    shared = [h for h in new_chain if h in pinned]
    if shared:
        last = max(shared, key=lambda h: pinned[h])
        return (
            "rewritten",
            f"history rewritten: the chain leaves the pinned chain after {last}, and the "
            f"pinned head {pin.head} is not on it (new head {head})",
        )
    return (
        "rewritten",
        f"history rewritten: no AUM of the pinned chain is on the new chain (pinned head "
        f"{pin.head}, new head {head})",
    )


def _check_cut(
    base: PinCheck,
    pin: Pin,
    report: AuditReport,
    held: dict[str, AUMRecord],
    source: str,
    progress: Progress | None,
) -> PinCheck:
    """A source cut before its genesis: continue from the pinned state if it reaches the pin."""
    new_head = base.new_head
    reaches = pin.head in held or any(r.parent == pin.head for r in held.values())
    if reaches:
        start = hash_from_text(pin.head)
        got = verify_from(report.aums, start, pin.state, progress)
        if got.failure is not None:
            bad, why = got.failure
            return _fail(
                base,
                "invalid-after-pin",
                f"AUM {bad.hash_text} after the pinned head {pin.head} does not verify: {why}",
            )
        reached = pin.head if got.head is None else got.head.hash_text
        if new_head is not None and reached != new_head:
            return _fail(
                base,
                "abandoned-fork",
                f"from the pinned head {pin.head} the chain leads to {reached}, but the "
                f"source's head is {new_head}: the pinned head is not on its active chain",
            )
        since: list[AUMChange] = []
        prev = pin.state
        for a in got.chain:
            after = got.states[a.hash]
            since.append(_change_from_states(a, prev, after))
            prev = after
        chain = (*pin.chain, *(a.hash_text for a in got.chain))
        return _success(base, pin, reached, chain, got.state, tuple(since), source, from_pin=True)
    pinned = set(pin.chain)
    if new_head is not None and new_head in pinned:
        return _fail(base, *_gone(pin, new_head, [new_head]))
    shared = [h for h in held if h in pinned]
    if shared and new_head is not None:
        return _fail(base, *_gone(pin, new_head, shared))
    oldest = max(
        (r for r in report.history if r.message_index is not None),
        key=lambda r: r.message_index or 0,
        default=None,
    )
    if report.source == "lock-log" and oldest is not None and oldest.message_index is not None:
        n = oldest.message_index + 1
        return _fail(
            base,
            "not-reached",
            f"the log's {n} message(s) do not reach back to the pinned head {pin.head} (the "
            f"oldest, {oldest.hash}, has parent {oldest.parent}, which is not in the log): "
            f"at least {n + 1} AUM(s) were added since the pin, so it takes "
            f"`tailscale lock log --json --limit {n + 1}` or more to reach it (any limit at "
            "least the chain's length always does); nothing is decided until then",
            suggested_limit=n + 1,
        )
    return _fail(
        base,
        "not-reached",
        f"the source does not reach back to the pinned head {pin.head} (it was compacted "
        "past it): export the chain from a node that still holds it",
    )
