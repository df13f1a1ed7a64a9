"""Who is calling: node tokens, admin tokens (and the front's node identities)."""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from tka.control.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    Unauthenticated,
)
from tka.control.service._base import (
    _ADMIN_TOKEN_PREFIX,
    _INT64_MAX,
    _NODE_TOKEN_PREFIX,
    _TAILNET_RE,
    Caller,
    FrontCaller,
    JoinedRow,
    RequestContext,
    ServiceBase,
    _parse_token,
    hash_token,
)
from tka.control.store import (
    FrontKey,
    FrontRow,
    NodeRow,
    TailnetRow,
    Transaction,
)
from tka.nlkeys import NodePublic

#: Front tokens: ``tkafront-<id>-<secret>`` (the format FRONT-API.md gives).
_FRONT_TOKEN_PREFIX: Final = "tkafront"
_FRONT_TOKEN_RE: Final = re.compile(r"tkafront-([0-9]{1,19})-([A-Za-z0-9_-]{43})")
_UINT64_MAX: Final = 2**64 - 1


def _parse_front_token(token: str | None) -> tuple[int, str]:
    if not token:
        raise Unauthenticated("missing token: send 'Authorization: Bearer <token>'")
    m = _FRONT_TOKEN_RE.fullmatch(token)
    if m is None or int(m.group(1)) > _INT64_MAX:
        raise Unauthenticated("invalid token")
    return int(m.group(1)), m.group(2)


def _token_node(secret_part: str, node: NodeRow | None) -> NodeRow:
    """*node* if a node token's secret part is its token, else :class:`Unauthenticated`.

    The hashes are compared in constant time, and an unknown node (``None``)
    costs the same as a wrong secret.
    """
    stored = node.token_hash if node is not None else bytes(32)
    if not hmac.compare_digest(hash_token(secret_part), stored) or node is None:
        raise Unauthenticated("invalid token")
    return node


class Auth(ServiceBase):
    """Authentication of callers, and a node's write transaction."""

    @staticmethod
    def _auth_node(
        txn: Transaction,
        token: Caller,
        node_key: NodePublic | None,
        ctx: RequestContext,
        key_field: str = "NodeKey",
    ) -> tuple[NodeRow, TailnetRow]:
        if isinstance(token, FrontCaller):
            return Auth._auth_front_node(txn, token, node_key, ctx, key_field)
        node_id, secret_part = _parse_token(token, _NODE_TOKEN_PREFIX)
        node = _token_node(secret_part, txn.node(node_id))
        ctx.tailnet, ctx.node_id = node.tailnet, node.node_id
        if node_key is None or node_key.raw != node.node_key:
            raise Forbidden(f"{key_field} is not the node key registered for this node")
        t = txn.tailnet(node.tailnet)
        if t is None:
            raise NotFound("the node's tailnet does not exist")
        return node, t

    @staticmethod
    def _auth_front_node(
        txn: Transaction,
        caller: FrontCaller,
        node_key: NodePublic | None,
        ctx: RequestContext,
        key_field: str,
    ) -> tuple[NodeRow, TailnetRow]:
        Auth._auth_front_token(txn, caller)
        ctx.tailnet, ctx.node_id = caller.tailnet, caller.node_id
        node = txn.front_node(caller.tailnet, caller.node_id)
        if node is None:
            raise Forbidden(f"node {caller.node_id} was not fed to this tailnet")
        if node_key is None or node_key.raw != node.node_key:
            raise Forbidden(f"{key_field} is not the node key fed for node {caller.node_id}")
        t = txn.tailnet(caller.tailnet)
        if t is None:
            raise NotFound("the node's tailnet does not exist")
        return node, t

    @staticmethod
    def _auth_front_token(txn: Transaction, caller: FrontCaller) -> None:
        """The front token again, inside a transaction: revoked is revoked at once."""
        row = txn.front_token(caller.token_id)
        ok = hmac.compare_digest(
            row.token_hash if row is not None else bytes(32), caller.token_hash
        )
        if row is None or not ok or row.tailnet != caller.tailnet:
            raise Unauthenticated("invalid token")

    def token_recently_valid(self, token: str | None) -> tuple[str, int] | None:
        """(tailnet, node ID) if *token* was found valid in the last minute, else ``None``.

        A pre-check only, with no database access, for the HTTP layer to
        read a body without a round trip: every RPC authenticates again
        inside its own transaction, so a token revoked or re-minted within
        the minute is still refused (its body is merely read first).
        """
        if not token:
            return None
        key = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        with self._lock:
            found = self._valid_tokens.get(key)
        if found is None or found[2] < time.monotonic():
            return None
        return found[0], found[1]

    @staticmethod
    def node_token_id(token: str | None) -> int:
        """The node ID a node token names (no store access); :class:`Unauthenticated` if none."""
        return _parse_token(token, _NODE_TOKEN_PREFIX)[0]

    @staticmethod
    def authenticate_kept(token: str | None, kept: JoinedRow) -> NodeRow:
        """:meth:`authenticate_node` against a read made beforehand (*kept*, for the token's ID).

        The same check (the token's hash compared in constant time, an
        unknown node costing the same), without the store.
        """
        node_id, secret_part = _parse_token(token, _NODE_TOKEN_PREFIX)
        node = kept[0]
        return _token_node(
            secret_part, node if node is not None and node.node_id == node_id else None
        )

    @staticmethod
    def front_read_key(token: str | None, tailnet: str, node_id: int) -> FrontKey | None:
        """What to read beforehand for a relay (see ``front_callers``), or ``None``.

        ``None`` (take the usual path, which answers the usual errors) for a
        token that is no front token, a tailnet name no tailnet can have,
        or a node ID out of range: nothing that could upset the batched read
        of other requests reaches it.
        """
        try:
            token_id = _parse_front_token(token)[0]
        except Unauthenticated:
            return None
        if not _TAILNET_RE.fullmatch(tailnet) or not 0 <= node_id <= _UINT64_MAX:
            return None
        return token_id, tailnet, node_id

    @staticmethod
    def authenticate_front_kept(
        token: str | None, tailnet: str, node_id: int, kept: FrontRow
    ) -> FrontCaller:
        """:meth:`authenticate_front` against a read made beforehand (*kept*, for the token's ID).

        The same checks (the token's hash in constant time, its tailnet, the
        node ID's range), without the store.
        """
        token_id, secret_part = _parse_front_token(token)
        row = kept[0]
        if row is not None and row.token_id != token_id:
            row = None
        h = hash_token(secret_part)
        ok = hmac.compare_digest(h, row.token_hash if row is not None else bytes(32))
        if row is None or not ok:
            raise Unauthenticated("invalid token")
        if row.tailnet != tailnet:
            raise Forbidden("this front token is for another tailnet")
        if not 0 <= node_id <= _UINT64_MAX:
            raise BadRequest("node ID: expected a whole number from 0 to 2^64-1")
        return FrontCaller(tailnet, node_id, token_id, h)

    def authenticate_node(self, token: str | None) -> NodeRow:
        """The node *token* belongs to, or :class:`Unauthenticated`.

        Looks at nothing but the token (one indexed read, one hash): the
        HTTP layer calls it before reading a request's body, so a request
        without a valid token costs next to nothing whatever it carries.
        """
        node_id, secret_part = _parse_token(token, _NODE_TOKEN_PREFIX)
        with self.store.read() as txn:
            found = txn.node(node_id)
        node = _token_node(secret_part, found)
        assert token is not None
        key = hashlib.sha256(token.encode("ascii")).digest()
        with self._lock:
            self._valid_tokens[key] = (node.tailnet, node.node_id, time.monotonic() + 60.0)
            self._valid_tokens.move_to_end(key)
            while len(self._valid_tokens) > 100_000:
                self._valid_tokens.popitem(last=False)
        return node

    def authenticate_front(self, token: str | None, tailnet: str, node_id: int = 0) -> FrontCaller:
        """The front *token* speaks for *tailnet*: a :class:`FrontCaller` for *node_id*.

        Like :meth:`authenticate_node`, one indexed read and a constant-time
        comparison, before any body is read. A token that is not a valid
        front token is :class:`Unauthenticated` (401); a valid one for
        another tailnet is :class:`Forbidden` (403).
        """
        token_id = _parse_front_token(token)[0]
        with self.store.read() as txn:
            row = txn.front_token(token_id)
        return self.authenticate_front_kept(token, tailnet, node_id, (row, None, None))

    @contextmanager
    def _node_write(
        self,
        token: Caller,
        node_key: NodePublic | None,
        ctx: RequestContext,
        key_field: str = "NodeKey",
        tailnet: str | None = None,
    ) -> Iterator[tuple[Transaction, NodeRow, TailnetRow]]:
        # Authenticate first (which names the tailnet; callers that just
        # did pass it), then take the tailnet's write lock and authenticate
        # again inside it, so the node is checked against what the
        # transaction sees.
        if tailnet is None:
            with self.store.read() as txn:
                node, _ = self._auth_node(txn, token, node_key, ctx, key_field)
            tailnet = node.tailnet
        with self.store.write(tailnet) as txn:
            node, t = self._auth_node(txn, token, node_key, ctx, key_field)
            if node.tailnet != tailnet:  # node IDs are never reused: cannot happen
                raise Unauthenticated("invalid token")
            yield txn, node, t

    def authenticate_admin(self, token: str | None) -> None:
        """Raise :class:`Unauthenticated` unless *token* is a valid admin token."""
        token_id, secret_part = _parse_token(token, _ADMIN_TOKEN_PREFIX)
        with self.store.read() as txn:
            stored = txn.admin_token_hash(token_id)
        ok = hmac.compare_digest(hash_token(secret_part), stored or bytes(32))
        if stored is None or not ok:
            raise Unauthenticated("invalid token")
