"""The audit as one self-contained HTML page, for people to look at.

Rendered with Jinja2 (autoescaping on: every hash, key and message comes
from the input) from ``templates/report.html.j2``; styles are inline and
nothing is fetched, so the page works offline, opened from a file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

from tka.aum import AUM, AUMKind
from tka.errors import TKAError
from tka.key import key_kind_name
from tka.state import State

from .outcome import AuditOutcome
from .report import AuditReport, key_name

__all__ = ["KeyTimeline", "key_timeline", "render_html"]

_RULES: Final = {
    "votes": "the branch signed by the most votes (of distinct keys trusted at the fork) wins",
    "remove-key": "the votes tied, and a remove-key AUM wins a tie",
    "lowest-hash": "the votes tied, and the branch with the lowest hash wins",
}


@dataclass(frozen=True)
class KeyTimeline:
    """Who was trusted after each AUM of the active chain, and with how many votes."""

    keys: tuple[str, ...]  # every key trusted at some point, in order of appearance
    # (hash, kind, votes per key) after each AUM that changed the key set or votes
    rows: tuple[tuple[str, str, tuple[int | None, ...]], ...]


def _active_aums(report: AuditReport, head: str | None) -> list[AUM]:
    """The active chain held by the report, oldest first."""
    by_hash = {a.hash: a for a in report.aums}
    cursor = next((a for a in report.aums if a.hash_text == head), None)
    out: list[AUM] = []
    seen: set[bytes] = set()
    while cursor is not None and cursor.hash not in seen:
        seen.add(cursor.hash)
        out.append(cursor)
        cursor = None if cursor.parent is None else by_hash.get(cursor.parent)
    out.reverse()
    return out


def key_timeline(outcome: AuditOutcome) -> KeyTimeline:
    """The trusted-key set over the active chain (from its oldest checkpoint held).

    The AUMs were verified by the audit; this only re-applies them to show
    the state after each one.
    """
    chain = _active_aums(outcome.report, outcome.head)
    keys: dict[str, None] = {}
    rows: list[tuple[str, str, dict[str, int]]] = []
    state: State | None = None
    for a in chain:
        try:
            if state is None:
                if a.message_kind != AUMKind.CHECKPOINT:
                    continue
                state = State.from_checkpoint(a)
            else:
                state = state.apply(a)
        except TKAError:
            break
        votes = {key_name(k): k.votes for k in state.keys or ()}
        keys.update(dict.fromkeys(votes))
        rows.append((a.hash_text, a.kind_name, votes))
    order = tuple(keys)
    out: list[tuple[str, str, tuple[int | None, ...]]] = []
    for h, kind, v in rows:
        column = tuple(v.get(k) for k in order)
        # Only the AUMs that changed who is trusted, or their votes: a chain
        # of metadata updates and restating checkpoints would bury them.
        if not out or out[-1][2] != column:
            out.append((h, kind, column))
    return KeyTimeline(order, tuple(out))


def _when(t: float | None) -> str:
    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


def render_html(outcome: AuditOutcome) -> str:
    """The run as a complete HTML document."""
    # Imported here: Jinja2 is needed for this page only.
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tka.audit", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["key_kind"] = key_kind_name
    template = env.get_template("report.html.j2")
    return template.render(
        o=outcome,
        r=outcome.report,
        timeline=key_timeline(outcome),
        rules=_RULES,
        generated=time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
    )
