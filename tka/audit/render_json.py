"""The audit as JSON (``tka-audit/1``; the keys are documented in :mod:`tka.audit`)."""

from __future__ import annotations

import json

from .outcome import AuditOutcome

__all__ = ["render_json"]


def render_json(outcome: AuditOutcome) -> str:
    """The run as indented JSON text (no trailing newline)."""
    return json.dumps(outcome.to_json(), indent=2)
