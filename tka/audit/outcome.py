"""One audit run: the chain's report, the pin comparison and the policy result together.

:class:`AuditOutcome` decides the exit status the command line uses and
gathers every reason for a failure in one list, so each renderer (text,
JSON, HTML) shows the same verdict for the same run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tka.state import State

from .pin import PinCheck
from .policy import PolicyResult
from .report import AuditReport

__all__ = ["EXIT_OK", "EXIT_REFUSED", "AuditOutcome", "Overall"]

#: The chain verifies (and extends the pin, and meets the policy).
EXIT_OK: Final = 0
#: Refused: the chain does not verify, breaks the pin or violates the policy.
EXIT_REFUSED: Final = 1

Overall = Literal["pass", "fail"]


@dataclass(frozen=True)
class AuditOutcome:
    """The report plus the optional pin and policy checks, and the verdict over all three."""

    report: AuditReport
    pin: PinCheck | None = None
    policy: PolicyResult | None = None
    notes: tuple[str, ...] = field(default=())  # informational lines (e.g. "pin moved")

    @property
    def chain_ok(self) -> bool:
        """Whether the chain itself is acceptable.

        A valid chain is; so is one cut short (``incomplete``) when the part
        after the pinned head verified from the pinned state.
        """
        if self.report.verdict == "valid":
            return True
        return (
            self.report.verdict == "incomplete"
            and self.pin is not None
            and self.pin.ok
            and self.pin.verified_from_pin
        )

    @property
    def ok(self) -> bool:
        """Whether the run passes: chain, pin and policy."""
        return (
            self.chain_ok
            and (self.pin is None or self.pin.ok)
            and (self.policy is None or self.policy.ok)
        )

    @property
    def overall(self) -> Overall:
        """``pass`` or ``fail``."""
        return "pass" if self.ok else "fail"

    @property
    def exit_code(self) -> int:
        """0 when the run passes, else 1."""
        return EXIT_OK if self.ok else EXIT_REFUSED

    @property
    def head(self) -> str | None:
        """The verified head: the report's, or the one reached from the pin."""
        if self.report.head is not None:
            return self.report.head
        if self.pin is not None and self.pin.verified_from_pin:
            return self.pin.new_head
        return None

    @property
    def state(self) -> State | None:
        """The verified state at :attr:`head`."""
        if self.report.state is not None:
            return self.report.state
        if self.pin is not None and self.pin.verified_from_pin:
            return self.pin.state
        return None

    @property
    def reasons(self) -> tuple[str, ...]:
        """Every reason the run fails, the chain's first, then the pin's, then the policy's."""
        out: list[str] = []
        if not self.chain_ok:
            out.extend(r.text for r in self.report.reasons)
            if not self.report.reasons:
                out.append(f"the chain is {self.report.verdict}")
        if self.pin is not None and not self.pin.ok:
            out.extend(f"pin: {r}" for r in self.pin.reasons)
        if self.policy is not None:
            if not self.policy.checked:
                out.append("policy: not checked, the chain has no verified state")
            out.extend(f"policy: {v.text}" for v in self.policy.violations)
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        """The run as JSON: the ``tka-audit/1`` report with ``outcome``, ``pin`` and ``policy``."""
        doc = self.report.to_json()
        doc["outcome"] = {
            "result": self.overall,
            "exit_code": self.exit_code,
            "reasons": list(self.reasons),
            "head": self.head,
            "notes": list(self.notes),
        }
        doc["pin"] = None if self.pin is None else self.pin.to_json()
        doc["policy"] = None if self.policy is None else self.policy.to_json()
        return doc
