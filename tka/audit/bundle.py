"""Reading ``tka-bundle/1`` exports (:mod:`tka.bundle`)."""

from __future__ import annotations

import json

from tka.bundle import BUNDLE_FORMAT, Bundle
from tka.errors import TKAError

from .report import AuditReason, AuditReport
from .verify import Progress, audit_tree

__all__ = ["audit_bundle", "audit_bundle_text", "looks_like_bundle"]


def audit_bundle(bundle: Bundle, *, progress: Progress | None = None) -> AuditReport:
    """Audit a :class:`tka.bundle.Bundle`; its recorded head must be the verified head."""
    return audit_tree(
        bundle.aums,
        "bundle",
        claimed_head=bundle.head,
        claim_name="bundle's head",
        progress=progress,
    )


def audit_bundle_text(text: str, *, progress: Progress | None = None) -> AuditReport:
    """Audit a bundle file's text; a bundle that does not parse is an ``invalid`` report."""
    try:
        # surrogatepass: a lone surrogate becomes bytes the bundle parser
        # rejects as not UTF-8, instead of an encoding crash here.
        bundle = Bundle.from_json(text.encode("utf-8", "surrogatepass"))
    except TKAError as exc:
        return AuditReport("bundle", "invalid", (AuditReason(str(exc)),))
    return audit_bundle(bundle, progress=progress)


def looks_like_bundle(text: str) -> bool:
    """Whether *text* is a JSON object whose ``format`` is the bundle format."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("format") == BUNDLE_FORMAT
