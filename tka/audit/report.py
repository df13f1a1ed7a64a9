"""The audit report: verdict, reasons, per-AUM history, forks and findings.

Plain frozen dataclasses with ``to_json()``; nothing here reads input or
verifies anything. The JSON keys are documented in :mod:`tka.audit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tka.aum import AUM, hash_to_text
from tka.errors import VerificationError
from tka.key import Key, key_kind_name
from tka.state import State

__all__ = [
    "AUDIT_FORMAT",
    "AUMRecord",
    "AuditReason",
    "AuditReport",
    "AuditWarning",
    "ForkBranch",
    "ForkRecord",
    "PartialVerification",
    "Severity",
    "Verdict",
    "key_name",
    "keys_of",
    "short_hash",
    "signers",
    "state_json",
    "tlpub",
]

#: Version of the JSON report; bumped only when a key changes meaning or goes away.
AUDIT_FORMAT: Final = "tka-audit/1"

Verdict = Literal["valid", "incomplete", "invalid"]
Severity = Literal["warning", "notice"]


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
    time: float | None = None  # Unix time the source recorded (a TKA directory's CreatedUnix)

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
            "time": self.time,
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
            "state": None if self.state is None else state_json(self.state),
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
    # The AUMs audited, for checks that continue from here (the pin); not
    # part of the JSON report, which names them in ``history``.
    aums: tuple[AUM, ...] = field(default=(), repr=False, compare=False)

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
            "state": None if self.state is None else state_json(self.state),
            "history": [r.to_json() for r in self.history],
            "forks": [f.to_json() for f in self.forks],
            "warnings": [w.to_json() for w in self.warnings],
            "partial": None if self.partial is None else self.partial.to_json(),
        }

    def to_text(self) -> str:
        """A readable report, one fact per line (no trailing newline)."""
        # Imported here: the renderer imports these types.
        from tka.audit.render_text import render_text

        return render_text(self)


# -- names shared by the checks and the renderers ---------------------------------


def tlpub(data: bytes | None) -> str:
    """A key ID as Tailscale prints it: ``tlpub:<hex>``."""
    return "tlpub:" + (data or b"").hex()


def key_name(key: Key) -> str:
    """The ``tlpub:`` name of a trusted key."""
    return tlpub(key.public)


def keys_of(state: State | None) -> dict[str, Key]:
    """The trusted keys of *state* by ``tlpub:`` name (empty for ``None``)."""
    return {} if state is None else {key_name(k): k for k in state.keys or ()}


def state_json(s: State) -> dict[str, Any]:
    """A state as the report's JSON shows it."""
    return {
        "last_aum_hash": None if s.last_aum_hash is None else hash_to_text(s.last_aum_hash),
        "state_id1": s.state_id1,
        "state_id2": s.state_id2,
        "disablement_values": [(v or b"").hex() for v in s.disablement_values or ()],
        "keys": [
            {
                "key": key_name(k),
                "kind": key_kind_name(k.kind),
                "votes": k.votes,
                "meta": None if k.meta is None else dict(sorted(k.meta.items())),
            }
            for k in s.keys or ()
        ],
    }


def signers(aum: AUM) -> tuple[str, ...]:
    """The ``tlpub:`` key of each signature of *aum*, in order."""
    return tuple(tlpub(s.key_id) for s in aum.signatures or ())


def short_hash(h: str | None) -> str:
    """A hash cut for reading (``-`` for none)."""
    return "-" if h is None else h[:12] + "…"
