"""An audit policy: what the watchers of a tailnet require of its chain.

A policy file is JSON (or TOML when its name ends in ``.toml``)::

    {
      "trusted_keys": ["tlpub:...", "tlpub:..."],  # the only keys that may ever be trusted
      "min_trusted_keys": 2,                       # at least this many trusted at the head
      "min_disablement_values": 2,                 # at least this many disablement values
      "genesis": "<base32>"                        # optional: the chain must start here
    }

Every member is optional; any other member is an error (a misspelt rule
must not pass silently). :func:`check_policy` returns one violation per
offending key or value: every key trusted at the head that is not listed,
every unlisted key that the audited history trusted for a while and then
removed (with the AUM that added it and who signed it), and each minimum
that is not met.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from tka.aum import hash_from_text
from tka.errors import DecodeError, UsageError
from tka.nlkeys import NLPublic
from tka.state import State

from .report import AuditReport, keys_of
from .sources import UnreadableInput, decode_text

__all__ = [
    "MAX_POLICY_BYTES",
    "POLICY_FIELDS",
    "Policy",
    "PolicyError",
    "PolicyResult",
    "PolicyViolation",
    "check_policy",
    "load_policy",
    "parse_policy",
]

#: Largest policy file read.
MAX_POLICY_BYTES: Final = 1024 * 1024
#: The members a policy may have.
POLICY_FIELDS: Final = ("trusted_keys", "min_trusted_keys", "min_disablement_values", "genesis")


class PolicyError(UsageError):
    """A policy file that is not a valid policy (unknown member, wrong type, bad key)."""


@dataclass(frozen=True)
class Policy:
    """The requirements read from a policy file; ``None`` means not required."""

    trusted_keys: frozenset[str] | None = None  # "tlpub:<hex>", lower case
    min_trusted_keys: int | None = None
    min_disablement_values: int | None = None
    genesis: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The policy as a JSON object."""
        return {
            "trusted_keys": None if self.trusted_keys is None else sorted(self.trusted_keys),
            "min_trusted_keys": self.min_trusted_keys,
            "min_disablement_values": self.min_disablement_values,
            "genesis": self.genesis,
        }


@dataclass(frozen=True)
class PolicyViolation:
    """One broken rule, naming the key or value at fault."""

    rule: str  # the policy member
    text: str
    key: str | None = None  # the tlpub: key concerned
    aum: str | None = None  # the AUM that introduced it

    def to_json(self) -> dict[str, Any]:
        """The violation as a JSON object."""
        return {"rule": self.rule, "text": self.text, "key": self.key, "aum": self.aum}


@dataclass(frozen=True)
class PolicyResult:
    """The outcome of checking a policy against an audit."""

    path: str
    policy: Policy
    checked: bool  # False: there was no verified state to check
    violations: tuple[PolicyViolation, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the policy was checked and nothing violates it."""
        return self.checked and not self.violations

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON object (see :mod:`tka.audit` for the keys)."""
        return {
            "path": self.path,
            "ok": self.ok,
            "checked": self.checked,
            "policy": self.policy.to_json(),
            "violations": [v.to_json() for v in self.violations],
        }


def _count(doc: dict[str, Any], name: str) -> int | None:
    v = doc.get(name)
    if v is None:
        return None
    if type(v) is not int or v < 0:
        raise PolicyError(f"policy: {name} must be a whole number of at least 0, got {v!r}")
    return v


def parse_policy(doc: Any) -> Policy:
    """Build a :class:`Policy` from parsed JSON or TOML; raises :class:`PolicyError`."""
    if not isinstance(doc, dict):
        raise PolicyError("policy: expected an object of rules")
    unknown = sorted(set(doc) - set(POLICY_FIELDS))
    if unknown:
        raise PolicyError(
            f"policy: unknown field {unknown[0]!r} (known: {', '.join(POLICY_FIELDS)})"
        )
    keys: frozenset[str] | None = None
    if "trusted_keys" in doc:
        raw = doc["trusted_keys"]
        if not isinstance(raw, list):
            raise PolicyError("policy: trusted_keys must be a list of tlpub: keys")
        names = []
        for i, k in enumerate(raw):
            if not isinstance(k, str):
                raise PolicyError(f"policy: trusted_keys[{i}] must be text, got {k!r}")
            try:
                names.append("tlpub:" + NLPublic.from_text(k.strip()).raw.hex())
            except DecodeError as exc:
                raise PolicyError(f"policy: trusted_keys[{i}]: {exc}") from None
        keys = frozenset(names)
    genesis = doc.get("genesis")
    if genesis is not None:
        if not isinstance(genesis, str):
            raise PolicyError("policy: genesis must be an AUM hash (base32 text)")
        try:
            hash_from_text(genesis)
        except DecodeError as exc:
            raise PolicyError(f"policy: genesis: {exc}") from None
    return Policy(
        keys, _count(doc, "min_trusted_keys"), _count(doc, "min_disablement_values"), genesis
    )


def load_policy(path: str) -> Policy:
    """Read a policy file (JSON, or TOML for ``*.toml``).

    Raises :class:`~tka.audit.sources.UnreadableInput` when the file cannot
    be read and :class:`PolicyError` when it is not a valid policy.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise UnreadableInput(f"policy file {path}: {exc.strerror}") from None
    if len(data) > MAX_POLICY_BYTES:
        raise UnreadableInput(f"policy file {path}: larger than 1 MiB")
    text = decode_text(data, f"policy file {path}")
    try:
        doc = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    except (ValueError, RecursionError) as exc:
        kind = "TOML" if path.endswith(".toml") else "JSON"
        raise PolicyError(f"policy file {path} is not valid {kind}: {exc}") from None
    try:
        return parse_policy(doc)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def _genesis_violations(
    required: str, genesis: str | None, pinned_genesis: str | None
) -> list[PolicyViolation]:
    """The policy's ``genesis`` rule, also for a source cut short before its genesis.

    A cut source (a log taken with ``--limit``, a compacted directory) that
    verified from a pin continues the pinned chain, so the pin's genesis is
    its genesis. With neither, the rule cannot be checked, and a rule that
    cannot be checked is not met: the run fails saying so rather than
    passing a policy it never applied.
    """
    if genesis is not None:
        if genesis != required:
            return [
                PolicyViolation(
                    "genesis",
                    f"the chain's genesis is {genesis}, the policy requires {required}",
                    aum=genesis,
                )
            ]
        return []
    if pinned_genesis is not None:
        if pinned_genesis != required:
            return [
                PolicyViolation(
                    "genesis",
                    f"the pinned chain's genesis is {pinned_genesis} (the source is cut short "
                    f"before it), the policy requires {required}",
                    aum=pinned_genesis,
                )
            ]
        return []
    return [
        PolicyViolation(
            "genesis",
            "the genesis could not be checked: the source is cut short before its genesis "
            "and no pin records one (raise --limit to reach the genesis, or audit with --pin)",
        )
    ]


def check_policy(
    path: str,
    policy: Policy,
    report: AuditReport,
    state: State | None,
    added: Iterable[tuple[str, str, tuple[str, ...]]] = (),
    pinned_genesis: str | None = None,
) -> PolicyResult:
    """Check *policy* against the audit and the verified *state* at its head.

    *state* is the report's state, or the state reached from a pin when the
    source is cut; with no state (the chain does not verify) nothing is
    checked and the result is not ok. *added* lists keys added by AUMs
    verified elsewhere (from the pin): ``(key, AUM hash, signers)``.
    *pinned_genesis* is the genesis a pin recorded, which stands for the
    chain's when the source is cut short before it.
    """
    if state is None:
        return PolicyResult(path, policy, False)
    out: list[PolicyViolation] = []
    trusted = keys_of(state)
    added_by: dict[str, tuple[str, tuple[str, ...]]] = {}
    for k, aum, who in added:
        added_by.setdefault(k, (aum, who))
    for rec in report.history:
        # Only what the active chain did: a losing fork branch never trusted anyone.
        if rec.active and rec.verified is not False:
            for k in rec.keys_added:
                added_by.setdefault(k, (rec.hash, rec.signers))

    def origin(k: str) -> str:
        if k not in added_by:
            return ""
        aum, who = added_by[k]
        return f" (added by AUM {aum}, signed by {', '.join(who) or 'nobody'})"

    if policy.genesis is not None:
        out.extend(_genesis_violations(policy.genesis, report.genesis, pinned_genesis))
    if policy.trusted_keys is not None:
        for k in trusted:
            if k not in policy.trusted_keys:
                out.append(
                    PolicyViolation(
                        "trusted_keys",
                        f"key {k} is trusted but not in the policy's trusted_keys{origin(k)}",
                        key=k,
                        aum=added_by.get(k, (None,))[0],
                    )
                )
        for k in added_by:
            if k not in trusted and k not in policy.trusted_keys:
                out.append(
                    PolicyViolation(
                        "trusted_keys",
                        f"key {k} was trusted for a while, then removed, but is not in the "
                        f"policy's trusted_keys{origin(k)}",
                        key=k,
                        aum=added_by[k][0],
                    )
                )
    n_keys = len(state.keys or ())
    if policy.min_trusted_keys is not None and n_keys < policy.min_trusted_keys:
        out.append(
            PolicyViolation(
                "min_trusted_keys",
                f"{n_keys} trusted key(s) at the head, the policy requires at least "
                f"{policy.min_trusted_keys}",
            )
        )
    n_values = len(state.disablement_values or ())
    if policy.min_disablement_values is not None and n_values < policy.min_disablement_values:
        out.append(
            PolicyViolation(
                "min_disablement_values",
                f"{n_values} disablement value(s), the policy requires at least "
                f"{policy.min_disablement_values}",
            )
        )
    return PolicyResult(path, policy, True, tuple(out))
