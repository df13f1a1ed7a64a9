"""Verify an exported tailnet-lock chain end to end, over time, and report on it.

One module per job:

* sources: :mod:`.lock_log` (``tailscale lock log --json``, schema v1, at any
  ``--limit``), :mod:`.directory` (a node's TKA directory in Tailscale's
  layout), :mod:`.bundle` (``tka-bundle/1`` exports); :mod:`.sources` reads
  a file, ``-`` (standard input) or a directory, capped in size, and picks
  the reader;
* checks: :mod:`.verify` (the replay and the per-AUM history, forks),
  :mod:`.findings` (warnings), :mod:`.pin` (continuity with the head
  recorded last time), :mod:`.policy` (the watchers' rules);
* :mod:`.outcome` (the verdict over all of them) and :mod:`.run` (one run,
  the only writer: the pin file);
* renderers: :mod:`.render_text`, :mod:`.render_json`, :mod:`.render_html`.

Verdicts of a chain:

``valid``
    Everything is consistent and the whole history replays from a genesis
    AUM (``Authority.bootstrap`` from it, then ``inform`` with the rest,
    parents first, every signature and hash link checked, forks resolved by
    Tailscale's rules). ``head`` and ``state`` give the result. Valid means
    "consistent with this genesis": the genesis itself is trusted as given,
    so compare its hash with one obtained another way (or pin it).
``incomplete``
    Consistent, but the oldest AUM has a parent (the log was cut by
    ``--limit``, or the directory was compacted), so it cannot be verified
    from the start. When the part held starts at (or contains) a
    checkpoint, the AUMs after it are verified trusting that checkpoint; the
    result is in ``partial``. With a pin that the source reaches back to,
    the AUMs after the pinned head are verified from the pinned state, and
    the run passes.
``invalid``
    Anything else; ``reasons`` say why, each naming the message index and
    the AUM hash at fault where there is one (the oldest failing AUM first,
    for replay failures). A TKA directory that Tailscale's nodes cannot open
    (an orphan AUM whose parent is not stored, several chains) is invalid.

JSON (``tka audit --json``), format ``"tka-audit/1"``. The version changes
only when a key changes meaning or is removed; new keys may be added. Keys:

* ``format``: ``"tka-audit/1"``; ``source``: ``"lock-log"``, ``"bundle"``,
  ``"directory"``, ``"file"`` or ``"aums"``;
* ``verdict``; ``reasons``: ``[{"text", "message_index", "aum"}]``;
* ``genesis``, ``head``: base32 hashes or null; ``aum_count``;
* ``state``: ``{"last_aum_hash", "state_id1", "state_id2",
  "disablement_values": [hex], "keys": [{"key": "tlpub:...", "kind", "votes", "meta"}]}``
  or null;
* ``history``: one entry per AUM, parents first: ``{"hash", "parent", "kind",
  "message_index", "signers", "keys_added", "keys_removed", "keys_changed",
  "trusted_keys", "total_votes", "active", "verified", "time"}`` (``time``:
  Unix seconds the source recorded, or null: lock logs and bundles have none);
* ``forks``: ``[{"parent", "branches": [{"hash", "kind", "weight"}], "winner",
  "rule", "active"}]`` (``rule``: ``votes``, ``remove-key`` or ``lowest-hash``);
* ``warnings``: ``[{"code", "severity", "message", "aums", "keys"}]``;
* ``partial``: ``{"anchor", "ok", "head", "state", "error", "verified"}`` or null;
* ``outcome`` (command line): ``{"result": "pass"|"fail", "exit_code",
  "reasons": [text], "head", "notes": [text]}``: the verdict over the chain,
  the pin and the policy;
* ``pin`` (with ``--pin``, else null): ``{"path", "status", "ok", "reasons",
  "pinned_head", "new_head", "pinned_at", "verified_from_pin", "changes",
  "aums_since", "suggested_limit", "updated"}`` where ``status`` is one of
  ``created``, ``not-created``, ``unchanged``, ``extends``, ``rollback``,
  ``rewritten``, ``other-genesis``, ``abandoned-fork``, ``invalid-after-pin``,
  ``not-reached``, ``not-checked``; ``changes`` is ``{"keys_added",
  "keys_removed", "keys_reweighted": [{"key", "votes_before", "votes_after",
  "meta_changed"}], "disablement_values_added", "disablement_values_removed":
  [hex]}`` and ``aums_since`` ``[{"hash", "kind", "signers", "keys_added",
  "keys_removed", "keys_changed"}]``, oldest first;
* ``policy`` (with ``--policy``, else null): ``{"path", "ok", "checked",
  "policy": {...}, "violations": [{"rule", "text", "key", "aum"}]}``.
"""

from __future__ import annotations

from .bundle import audit_bundle
from .directory import audit_directory
from .findings import CHAIN_LENGTH_WARNING, DISABLEMENT_COUNT_WARNING, KEY_COUNT_WARNING
from .lock_log import audit_log
from .outcome import AuditOutcome
from .pin import PIN_FORMAT, Pin, PinCheck, check_pin, load_pin, save_pin
from .policy import Policy, PolicyError, PolicyResult, check_policy, load_policy, parse_policy
from .report import (
    AUDIT_FORMAT,
    AuditReason,
    AuditReport,
    AuditWarning,
    AUMRecord,
    ForkBranch,
    ForkRecord,
    PartialVerification,
    Verdict,
)
from .run import run_audit
from .sources import Source, UnreadableInput, audit_bytes, audit_source, read_source
from .verify import audit_aums

__all__ = [
    "AUDIT_FORMAT",
    "CHAIN_LENGTH_WARNING",
    "DISABLEMENT_COUNT_WARNING",
    "KEY_COUNT_WARNING",
    "PIN_FORMAT",
    "AUMRecord",
    "AuditOutcome",
    "AuditReason",
    "AuditReport",
    "AuditWarning",
    "ForkBranch",
    "ForkRecord",
    "PartialVerification",
    "Pin",
    "PinCheck",
    "Policy",
    "PolicyError",
    "PolicyResult",
    "Source",
    "UnreadableInput",
    "Verdict",
    "audit_aums",
    "audit_bundle",
    "audit_bytes",
    "audit_directory",
    "audit_log",
    "audit_source",
    "check_pin",
    "check_policy",
    "load_pin",
    "load_policy",
    "parse_policy",
    "read_source",
    "run_audit",
    "save_pin",
]
