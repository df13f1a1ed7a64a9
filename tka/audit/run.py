"""Run a whole audit: read the source, audit it, compare with the pin, check the policy.

The only place that writes: the pin file moves forward when the whole run
passes (unless told not to), atomically.
"""

from __future__ import annotations

from dataclasses import replace

from .outcome import AuditOutcome
from .pin import check_pin, save_pin
from .policy import Policy, check_policy
from .sources import Source, audit_source
from .verify import Progress

__all__ = ["run_audit"]


def run_audit(
    source: Source,
    *,
    pin_path: str | None = None,
    policy: Policy | None = None,
    policy_path: str = "",
    update_pin: bool = True,
    progress: Progress | None = None,
) -> AuditOutcome:
    """Audit *source*, then check it against the pin at *pin_path* and *policy*.

    With *update_pin*, a passing run records its head in the pin file (the
    first run creates it); a failing run never touches the pin, so the next
    run still compares with the last head that passed.
    """
    report = audit_source(source, progress=progress)
    pin = None
    if pin_path is not None:
        # No progress here: the bar counts the source's AUMs, checked above.
        pin = check_pin(pin_path, report, source=source.name)
    outcome = AuditOutcome(report, pin)
    if policy is not None:
        since = () if pin is None else pin.aums_since
        added = [(k, a.hash, a.signers) for a in since for k in a.keys_added]
        pinned_genesis = None if pin is None else pin.pinned_genesis
        result = check_policy(policy_path, policy, report, outcome.state, added, pinned_genesis)
        outcome = replace(outcome, policy=result)
    if pin is not None and pin.new_pin is not None and outcome.ok:
        if update_pin:
            save_pin(pin.path, pin.new_pin)
            note = (
                f"pin recorded at {pin.new_pin.head} in {pin.path}"
                if pin.status == "created"
                else f"pin moved from {pin.pinned_head} to {pin.new_pin.head} in {pin.path}"
            )
            outcome = replace(outcome, pin=replace(pin, updated=True), notes=(note,))
        else:
            outcome = replace(outcome, notes=(f"--no-update: {pin.path} left as it was",))
    return outcome
