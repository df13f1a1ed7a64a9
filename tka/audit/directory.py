"""Reading a node's TKA directory (Tailscale's on-disk layout), read only.

The directory is ``<VarRoot>/tka-profiles/<profile>`` on a Tailscale node:
one file per AUM under a two-letter subdirectory, plus the
``last_active_ancestor`` hint. Every stored (not purged) AUM is verified,
and the directory is also opened the way a node opens it: a directory the
node cannot open (an orphan AUM whose parent is not stored, several
distinct chains, a chain too long to scan) is not valid, whatever the AUMs
themselves say, because the nodes holding it have no working authority.
"""

from __future__ import annotations

import os
from dataclasses import replace

from tka.aum import AUM, hash_to_text
from tka.authority import Authority
from tka.errors import TKAError, UsageError

from .report import AuditReason, AuditReport, AuditWarning
from .verify import Progress, audit_tree

__all__ = ["audit_directory"]


def audit_directory(
    path: str | os.PathLike[str], *, progress: Progress | None = None
) -> AuditReport:
    """Audit a node's AUM directory in Tailscale's layout (read only).

    Every stored (not purged) AUM is verified, with the time the node
    stored it. The head the node itself would open (with its
    last-active-ancestor hint, without re-checking signatures) is compared
    with the verified one; if the node cannot open the directory at all,
    the verdict is ``invalid``.
    """
    base = os.fspath(path)
    if not os.path.isdir(base):
        raise UsageError(f"audit: {base} is not a directory")
    # Imported here: the filesystem backend is optional for the other sources.
    from tka.storage.fs import FilesystemStore

    try:
        store = FilesystemStore(base)
    except TKAError as exc:
        return AuditReport("directory", "invalid", (AuditReason(f"opening the directory: {exc}"),))
    open_error: str | None = None
    node_head: bytes | None = None
    times: dict[bytes, float] = {}
    try:
        try:
            aums: list[AUM] = []
            for h in store.all_hashes():
                aum = store.get(h)
                if aum is None:
                    continue
                aums.append(aum)
                t = store.commit_time(h)
                if t is not None:
                    times[h] = t
        except TKAError as exc:
            return AuditReport(
                "directory", "invalid", (AuditReason(f"reading the directory: {exc}"),)
            )
        try:
            node_head = Authority.open(store).head_hash
        except TKAError as exc:
            open_error = str(exc)
    finally:
        store.close()
    report = audit_tree(aums, "directory", times=times, progress=progress)
    if open_error is not None:
        # Agree with the node: what it cannot open protects nothing.
        return replace(
            report,
            verdict="invalid",
            head=None,
            state=None,
            # First: it is why the directory is refused, whatever else is wrong.
            reasons=(
                AuditReason(f"Tailscale's nodes cannot open this directory: {open_error}"),
                *report.reasons,
            ),
        )
    if node_head is not None and report.head is not None and hash_to_text(node_head) != report.head:
        report = replace(
            report,
            warnings=(
                *report.warnings,
                AuditWarning(
                    "node-head-differs",
                    "warning",
                    f"the node opens this directory at {hash_to_text(node_head)}, but the "
                    f"verified head is {report.head}",
                    aums=(hash_to_text(node_head), report.head),
                ),
            ),
        )
    return report
