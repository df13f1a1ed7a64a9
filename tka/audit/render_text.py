"""The audit report as plain text, for people at a terminal."""

from __future__ import annotations

from tka.state import State

from .outcome import AuditOutcome
from .report import AuditReport, key_name

__all__ = ["render_outcome_text", "render_text"]


def render_text(r: AuditReport) -> str:
    """The report as readable text, one fact per line (no trailing newline)."""
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
        lines.append(f"  {key_name(k)}  votes {k.votes}{meta}")
    return lines


def render_outcome_text(o: AuditOutcome) -> str:
    """A whole run as text: the report, then the pin and the policy, then the result."""
    lines = [render_text(o.report)]
    p = o.pin
    if p is not None:
        lines.append(f"pin ({p.path}): {p.status.upper()}")
        if p.pinned_head:
            lines.append(
                f"  pinned head: {p.pinned_head}  (pinned {p.pinned_at or 'at an unknown time'})"
            )
        if p.new_head:
            lines.append(f"  new head:    {p.new_head}")
        if p.verified_from_pin:
            lines.append("  the AUMs after the pinned head were verified from the pinned state")
        for r in p.reasons:
            lines.append(f"  reason: {r}")
        if p.changes is not None:
            c = p.changes
            if c.empty and not p.aums_since:
                lines.append("  changes since the pin: none")
            else:
                lines.append(f"  changes since the pin ({len(p.aums_since)} AUM(s)):")
                lines.extend(
                    f"    key added: {k.key} (votes {k.votes_after})" for k in c.keys_added
                )
                lines.extend(
                    f"    key removed: {k.key} (had votes {k.votes_before})" for k in c.keys_removed
                )
                lines.extend(
                    f"    key re-weighted: {k.key} votes {k.votes_before} -> {k.votes_after}"
                    + (" (metadata changed)" if k.meta_changed else "")
                    for k in c.keys_reweighted
                )
                lines.extend(f"    disablement value added: {v}" for v in c.disablement_added)
                lines.extend(f"    disablement value removed: {v}" for v in c.disablement_removed)
                for a in p.aums_since:
                    delta = (
                        [f"+{k}" for k in a.keys_added]
                        + [f"-{k}" for k in a.keys_removed]
                        + [f"~{k}" for k in a.keys_changed]
                    )
                    lines.append(
                        f"    AUM {a.hash} {a.kind} signed by {', '.join(a.signers) or 'nobody'}"
                        + (f": {' '.join(delta)}" if delta else "")
                    )
    pol = o.policy
    if pol is not None:
        state = "OK" if pol.ok else ("NOT CHECKED" if not pol.checked else "VIOLATED")
        lines.append(f"policy ({pol.path}): {state}")
        lines.extend(f"  violation [{v.rule}]: {v.text}" for v in pol.violations)
    lines.extend(o.notes)
    lines.append(f"result: {o.overall.upper()}" + (f" (head {o.head})" if o.head else ""))
    lines.extend(f"  reason: {r}" for r in o.reasons)
    return "\n".join(lines)
