"""Admin operations: tailnets, registrations, tokens, the lock log."""

from __future__ import annotations

import base64
import secrets
from dataclasses import replace
from typing import Any, Final

from tka.admission import NodeDecision
from tka.authority import Authority
from tka.control import wire
from tka.control.errors import (
    BadRequest,
    Conflict,
    NotFound,
)
from tka.control.service._base import (
    _ADMIN_TOKEN_PREFIX,
    _NODE_TOKEN_PREFIX,
    _TAILNET_RE,
    MAX_LOG_LIMIT,
    _mint,
    _records,
    _tlpub,
    hash_token,
)
from tka.control.service.auth import Auth
from tka.control.store import (
    STATUS_DISABLED,
    STATUS_ENABLED,
    STATUS_PENDING,
    AdminTokenRow,
    NodeRow,
    TailnetRow,
    Transaction,
)
from tka.nlkeys import NodePublic

#: Admin node listings: nodes per page by default, and at most.
NODE_PAGE: Final = 1000
MAX_NODE_PAGE: Final = 5000
#: Lock log updates per page (a rendered update is at most a few kB).
LOG_PAGE: Final = 500


class AdminOps(Auth):
    """What an admin token may do."""

    def mint_admin_token(self, label: str = "") -> str:
        """Create an admin token; only its hash is kept. Returns the token (show it once)."""
        secret_part = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
        with self.store.write() as txn:
            token_id = txn.insert_admin_token(hash_token(secret_part), label, self.clock())
        return f"{_ADMIN_TOKEN_PREFIX}_{token_id}_{secret_part}"

    def create_tailnet(self, name: str) -> dict[str, Any]:
        """Create a tailnet (lock off until a node initializes it)."""
        if not isinstance(name, str) or not _TAILNET_RE.fullmatch(name):
            raise BadRequest(
                "Name: 1-63 characters of letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        with self.store.write() as txn:
            t = txn.insert_tailnet(name, self.clock())
        return self._tailnet_json(t, 0, None)

    def _tailnet_json(
        self, t: TailnetRow, node_count: int, authority: Authority | None, locked: int = 0
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Name": t.name,
            "Status": t.status,
            "Enabled": t.status == STATUS_ENABLED,
            "Nodes": node_count,
        }
        if authority is not None:
            out["Head"] = authority.head.hash_text
            out["TrustedKeys"] = [
                {"Key": _tlpub(k.public or b""), "Votes": k.votes} for k in authority.keys
            ]
            out["StateID"] = authority.state_ids[0]
            out["LockedOut"] = locked
        return out

    def tailnets(self) -> list[dict[str, Any]]:
        """Every tailnet, briefly."""
        with self.store.read() as txn:
            rows = txn.tailnets()
            return [self._tailnet_json(t, len(txn.nodes(t.name)), None) for t in rows]

    def tailnet_status(self, name: str) -> dict[str, Any]:
        """One tailnet: lock status, head, trusted keys, node counts."""
        with self.store.read() as txn:
            t = self._tailnet(txn, name)
            nodes = txn.nodes(name)
            if t.status != STATUS_ENABLED:
                return self._tailnet_json(t, len(nodes), None)
            authority = self._cached_authority(txn, t)
        locked = len(self.admission.locked_out(authority, _records(nodes)))
        return self._tailnet_json(t, len(nodes), authority, locked)

    def register_node(self, tailnet: str, req: wire.AdminRegisterRequest) -> dict[str, Any]:
        """Register a node and mint its token (returned once; only a hash is kept)."""
        if req.node_key is None:  # a required field: wire.decode refuses it already
            raise BadRequest("NodeKey: required")
        for what, v in (("RotationPubkey", req.rotation_pubkey), ("NLKey", req.nl_key)):
            if v and len(v) != 32:
                raise BadRequest(f"{what}: {len(v)} bytes, want 32")
        if len(req.name) > 200 or not req.name.isprintable():
            raise BadRequest("Name: at most 200 printable characters")
        now = self.clock()
        with self.store.write(tailnet if _TAILNET_RE.fullmatch(tailnet) else None) as txn:
            self._tailnet(txn, tailnet)
            # The token names the node's ID, which the insert assigns: insert
            # with a placeholder hash, then store the real one.
            row = txn.insert_node(
                NodeRow(
                    node_id=0,
                    tailnet=tailnet,
                    node_key=req.node_key.raw,
                    token_hash=bytes(32),
                    name=req.name,
                    rotation_pubkey=req.rotation_pubkey or None,
                    nl_key=req.nl_key or None,
                    created=now,
                    updated=now,
                    may_init=req.may_init,
                )
            )
            token, secret_part = _mint(_NODE_TOKEN_PREFIX, row.node_id)
            txn.save_node(replace(row, token_hash=hash_token(secret_part)))
        return {
            "Tailnet": tailnet,
            "NodeID": row.node_id,
            "NodeKey": req.node_key.text(),
            "MayInit": row.may_init,
            "Token": token,
        }

    def _admin_node(self, txn: Transaction, tailnet: str, node_id: int) -> NodeRow:
        self._tailnet(txn, tailnet)
        node = txn.node(node_id)
        if node is None or node.tailnet != tailnet:
            raise NotFound(f"no node {node_id} in tailnet {tailnet!r}")
        return node

    def set_may_init(self, tailnet: str, node_id: int, may_init: bool) -> dict[str, Any]:
        """Allow (or forbid) a node to begin tailnet lock initialization."""
        with self.store.write(tailnet if _TAILNET_RE.fullmatch(tailnet) else None) as txn:
            node = self._admin_node(txn, tailnet, node_id)
            if node.may_init != may_init:
                txn.save_node(replace(node, may_init=may_init, updated=self.clock()))
        return {"Tailnet": tailnet, "NodeID": node_id, "MayInit": may_init}

    def remint_node_token(self, tailnet: str, node_id: int) -> dict[str, Any]:
        """Give a node a new token; the old one stops working when this commits."""
        with self.store.write(tailnet if _TAILNET_RE.fullmatch(tailnet) else None) as txn:
            node = self._admin_node(txn, tailnet, node_id)
            if node.front_id is not None:
                raise Conflict(
                    f"node {node_id} is fed by a front (its node {node.front_id}): it has no token"
                )
            token, secret_part = _mint(_NODE_TOKEN_PREFIX, node.node_id)
            txn.save_node(replace(node, token_hash=hash_token(secret_part), updated=self.clock()))
        return {
            "Tailnet": tailnet,
            "NodeID": node.node_id,
            "NodeKey": NodePublic(node.node_key).text(),
            "MayInit": node.may_init,
            "Token": token,
        }

    def admin_tokens(self) -> list[dict[str, Any]]:
        """Every admin token: ID, label, creation time (never the secret or its hash)."""
        with self.store.read() as txn:
            rows: list[AdminTokenRow] = txn.admin_tokens()
        return [{"ID": r.token_id, "Label": r.label, "Created": r.created} for r in rows]

    def revoke_admin_token(self, token_id: int) -> None:
        """Forget an admin token: it stops working when this commits."""
        with self.store.write() as txn:
            if not txn.delete_admin_token(token_id):
                raise NotFound(f"no admin token {token_id}")

    def delete_node(self, tailnet: str, node_id: int) -> None:
        """Forget a node (its token stops working)."""
        with self.store.write(tailnet if _TAILNET_RE.fullmatch(tailnet) else None) as txn:
            self._tailnet(txn, tailnet)
            node = txn.node(node_id)
            if node is None or node.tailnet != tailnet:
                raise NotFound(f"no node {node_id} in tailnet {tailnet!r}")
            txn.delete_node(node_id)

    def node_decisions(self, tailnet: str) -> list[wire.AdminNode]:
        """Every node of a tailnet with the authority's decision on it (all at once)."""
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            nodes = txn.nodes(tailnet)
            authority = self._cached_authority(txn, t) if t.status == STATUS_ENABLED else None
        return self._decisions(t, nodes, authority)

    def node_decisions_page(
        self, tailnet: str, after: int = 0, limit: int = NODE_PAGE, *, locked_out: bool = False
    ) -> tuple[list[wire.AdminNode], int | None]:
        """One page of :meth:`node_decisions`: nodes with an ID above *after*, at most *limit*.

        Returns the page and the cursor of the next one (``None`` at the
        end). With *locked_out*, only the page's nodes the authority does
        not admit are returned (a page may then be empty while the cursor
        goes on): each page reads and decides at most *limit* nodes, so its
        cost and size are bounded whatever the tailnet's size.
        """
        if not 1 <= limit <= MAX_NODE_PAGE:
            raise BadRequest(f"limit: must be between 1 and {MAX_NODE_PAGE}")
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            nodes = txn.nodes_page(tailnet, after, limit)
            authority = self._cached_authority(txn, t) if t.status == STATUS_ENABLED else None
        out = self._decisions(t, nodes, authority)
        if locked_out:
            out = [n for n in out if not n.admitted]
        return out, (nodes[-1].node_id if len(nodes) == limit else None)

    def _decisions(
        self, t: TailnetRow, nodes: list[NodeRow], authority: Authority | None
    ) -> list[wire.AdminNode]:
        if authority is None:
            why = {
                STATUS_DISABLED: "admitted: tailnet lock is disabled",
                STATUS_PENDING: "admitted: tailnet lock is being initialized",
            }.get(t.status, "admitted: tailnet lock is not enabled")
            decisions: dict[int, NodeDecision | None] = {n.node_id: None for n in nodes}
        else:
            decisions = {
                d.node.node_id: d for d in self.admission.evaluate(authority, _records(nodes))
            }
        out = []
        for n in nodes:
            d = decisions[n.node_id]
            out.append(
                wire.AdminNode(
                    node_id=n.node_id,
                    name=n.name,
                    node_key=NodePublic(n.node_key),
                    rotation_pubkey=n.rotation_pubkey or b"",
                    key_signature=n.signature or b"",
                    admitted=True if d is None else d.admitted,
                    reason=why if d is None else d.reason,
                    signing_key=_tlpub(d.decision.signing_key)
                    if d is not None and d.decision.signing_key
                    else "",
                    reported_head=n.reported_head,
                    may_init=n.may_init,
                )
            )
        return out

    def lock_log(self, tailnet: str, limit: int = 50) -> str:
        """The tailnet's lock log in Tailscale's v1 JSON schema (read-only)."""
        from tka.lockjson import log_walk_storage, render_log

        if not 1 <= limit <= MAX_LOG_LIMIT:
            raise BadRequest(f"limit: must be between 1 and {MAX_LOG_LIMIT}")
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            if t.head is None:
                raise Conflict("tailnet lock was never enabled in this tailnet: no log")
            aums = log_walk_storage(txn.aum_storage(tailnet), t.head, limit)
        return render_log(aums, limit)

    def lock_log_page(
        self, tailnet: str, limit: int = 50, before: bytes | None = None
    ) -> tuple[str, bytes | None]:
        """One page of the lock log: at most :data:`LOG_PAGE` of the *limit* updates wanted.

        The page walks back from *before* (an AUM of the tailnet; the head
        by default) and is rendered in the v1 schema on its own; returns it
        and where the next page starts (``None`` when the log, or *limit*,
        ends here).
        """
        from tka.lockjson import log_walk_storage, render_log

        if not 1 <= limit <= MAX_LOG_LIMIT:
            raise BadRequest(f"limit: must be between 1 and {MAX_LOG_LIMIT}")
        page = min(limit, LOG_PAGE)
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            if t.head is None:
                raise Conflict("tailnet lock was never enabled in this tailnet: no log")
            storage = txn.aum_storage(tailnet)
            start = t.head if before is None else before
            if before is not None and storage.get(before) is None:
                raise NotFound("before: not an AUM of this tailnet")
            aums = log_walk_storage(storage, start, page)
        more = len(aums) == page and limit > page and aums[-1].parent is not None
        return render_log(aums, page), (aums[-1].parent if more else None)

    def admin_affected_sigs(self, tailnet: str, key_id: bytes) -> list[bytes]:
        """Admin view of ``affected-sigs``."""
        if len(key_id) != 32:
            raise BadRequest(f"key: {len(key_id)} bytes, want 32")
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            self._require_enabled(t)
            authority = self._cached_authority(txn, t)
            nodes = _records(txn.nodes(tailnet))
        return [
            n.signature or b"" for n in self.admission.affected_signatures(authority, nodes, key_id)
        ]

    def tailnet_exists(self, name: str) -> bool:
        """Whether a tailnet of that name exists."""
        with self.store.read() as txn:
            return txn.tailnet(name) is not None
