"""A front: a control plane (e.g. a patched Headscale) that relays to tka serve.

The front terminates Noise and knows which machine a request comes from;
the service keeps the authority (``integrations/headscale/FRONT-API.md`` is
the contract). Per tailnet, a front token (``tkafront-<id>-<secret>``)
lets the front:

* feed its nodes (:meth:`FrontOps.front_put_node`,
  :meth:`FrontOps.front_delete_node`), named by the front's own node IDs
  (uint64). A fed node is a :class:`~tka.control.store.NodeRow` with
  ``front_id`` set and no token; it may begin ``init``. A signature fed with
  it is kept only if it admits the node key under the current head;
* relay a node's TKA RPCs (:meth:`FrontOps.front_relay`): the same handlers
  as token mode, the node named by the front instead of by a token, and the
  body's ``NodeKey`` must be the key fed for that node. Everything a node
  sends is verified as in token mode: the front can do no more than the
  node could;
* read the state a map response needs (:meth:`FrontOps.front_state`) and
  what changed since a sequence number (:meth:`FrontOps.front_changes`).

The sequence number lives in the database (``tailnets.seq``), moved in the
same transaction as any change of head, enabled or disabled, and any change
of a fed node's signature (see :class:`~tka.control.store.SQLTransaction`),
so every replica on one database answers with the same numbers.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import replace
from typing import Any, Final

from tka.aum import hash_to_text
from tka.authority import Authority
from tka.control.errors import BadRequest, Conflict, NotFound
from tka.control.service._base import (
    _TAILNET_RE,
    _WRITE_ATTEMPTS,
    FrontCaller,
    RequestContext,
    _Retry,
    hash_token,
)
from tka.control.service.auth import Auth
from tka.control.store import (
    STATUS_DISABLED,
    STATUS_ENABLED,
    NodeRow,
    TailnetRow,
    Transaction,
)
from tka.errors import DecodeError
from tka.nlkeys import NLPublic, NodePublic

__all__ = ["FRONT_RPCS", "MAX_WAIT", "FrontCaller", "FrontOps"]

#: The node RPCs a front may relay (Tailscale's ``/machine/tka/...`` names).
FRONT_RPCS: Final = frozenset(
    {
        "init/begin",
        "init/finish",
        "bootstrap",
        "sync/offer",
        "sync/send",
        "disable",
        "sign",
        "affected-sigs",
    }
)
#: Longest wait of a ``/changes`` long poll, in seconds.
MAX_WAIT: Final = 60
#: Tailnets whose last ``/state`` answer is kept (a few MB each at most).
_STATE_CACHE_TAILNETS: Final = 16
#: A node-key signature is a few hundred bytes; a rotation chain nests a few.
_MAX_SIGNATURE_BYTES: Final = 16 * 1024


def _b64(data: bytes | None) -> str:
    return base64.b64encode(data).decode("ascii") if data else ""


def _head_text(t: TailnetRow) -> str:
    return hash_to_text(t.head) if t.status == STATUS_ENABLED and t.head else ""


def _parse_feed(body: dict[str, Any]) -> tuple[NodePublic, bytes | None, bytes | None]:
    """NodeKey, NLKey (or ``None``) and KeySignature (or ``None``) of a ``PUT /nodes/{id}``."""
    nk = body.get("NodeKey")
    if not isinstance(nk, str):
        raise BadRequest("NodeKey: expected nodekey: followed by 64 hex digits")
    try:
        node_key = NodePublic.from_text(nk)
    except DecodeError as exc:
        raise BadRequest(f"NodeKey: {exc}") from None
    nl = body.get("NLKey", "")
    if nl is None:
        nl = ""
    if not isinstance(nl, str):
        raise BadRequest('NLKey: expected nlpub: followed by 64 hex digits, or ""')
    nl_key: bytes | None = None
    if nl:
        try:
            nl_key = NLPublic.from_text(nl).raw
        except DecodeError as exc:
            raise BadRequest(f"NLKey: {exc}") from None
    sig_text = body.get("KeySignature", "")
    if sig_text is None:
        sig_text = ""
    if not isinstance(sig_text, str) or len(sig_text) > _MAX_SIGNATURE_BYTES * 2:
        raise BadRequest('KeySignature: expected standard base64, or ""')
    try:
        sig = base64.b64decode(sig_text, validate=True) if sig_text else b""
    except (binascii.Error, ValueError):
        raise BadRequest("KeySignature: not standard base64") from None
    if len(sig) > _MAX_SIGNATURE_BYTES:
        raise BadRequest(f"KeySignature: over {_MAX_SIGNATURE_BYTES} bytes")
    return node_key, nl_key, sig or None


class FrontOps(Auth):
    """The front API: node feed, relay, bulk read, change feed, front tokens."""

    # -- front tokens (admin) -------------------------------------------------------------

    def mint_front_token(self, tailnet: str, label: str = "") -> dict[str, Any]:
        """Create a front token for *tailnet*; only its hash is kept. Shown once."""
        secret_part = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
        with self.store.write(tailnet if _TAILNET_RE.fullmatch(tailnet) else None) as txn:
            self._tailnet(txn, tailnet)
            token_id = txn.insert_front_token(tailnet, hash_token(secret_part), label, self.clock())
        return {
            "ID": token_id,
            "Tailnet": tailnet,
            "Label": label,
            "Token": f"tkafront-{token_id}-{secret_part}",
        }

    def front_tokens(self, tailnet: str | None = None) -> list[dict[str, Any]]:
        """Front tokens (of one tailnet): ID, tailnet, label, creation time; never a secret."""
        with self.store.read() as txn:
            if tailnet is not None:
                self._tailnet(txn, tailnet)
            rows = txn.front_tokens(tailnet)
        return [
            {"ID": r.token_id, "Tailnet": r.tailnet, "Label": r.label, "Created": r.created}
            for r in rows
        ]

    def revoke_front_token(self, token_id: int) -> None:
        """Forget a front token: it stops working when this commits."""
        with self.store.write() as txn:
            if not txn.delete_front_token(token_id):
                raise NotFound(f"no front token {token_id}")

    # -- the node feed ---------------------------------------------------------------------

    def _admits(self, authority: Authority | None, node_key: bytes, sig: bytes | None) -> bool:
        if authority is None or sig is None:
            return False
        return self.admission.decide(authority, node_key, sig).admitted

    def front_put_node(
        self, caller: FrontCaller, body: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        """``PUT /nodes/{id}``: a node registered or re-keyed; keep it (and a signature
        only if it admits the node key under the current head)."""
        node_key, nl_key, fed_sig = _parse_feed(body)
        tailnet, front_id = caller.tailnet, caller.node_id
        ctx.tailnet, ctx.node_id = tailnet, front_id
        for _ in range(_WRITE_ATTEMPTS):
            # Decide outside the tailnet's write lock, against the head read here.
            with self.store.read() as txn:
                self._front_token_still_valid(txn, caller)
                t = self._tailnet(txn, tailnet)
                current = txn.front_node(tailnet, front_id)
                authority = self._cached_authority(txn, t) if t.status == STATUS_ENABLED else None
            same_key = current is not None and current.node_key == node_key.raw
            kept = current.signature if current is not None and same_key else None
            sig = kept
            if (
                fed_sig is not None
                and fed_sig != kept
                and not self._admits(authority, node_key.raw, kept)
                and self._admits(authority, node_key.raw, fed_sig)
            ):
                sig = fed_sig
            admitted = authority is None or self._admits(authority, node_key.raw, sig)
            try:
                with self.store.write(tailnet) as txn:
                    self._front_token_still_valid(txn, caller)
                    t2 = self._tailnet(txn, tailnet)
                    now_row = txn.front_node(tailnet, front_id)
                    if t2.version != t.version or _fields(now_row) != _fields(current):
                        raise _Retry
                    other = txn.node_by_key(tailnet, node_key.raw)
                    if other is not None and (now_row is None or other.node_id != now_row.node_id):
                        raise Conflict("NodeKey: another node of the tailnet has this node key")
                    now = self.clock()
                    if now_row is None:
                        txn.insert_node(
                            NodeRow(
                                node_id=0,
                                tailnet=tailnet,
                                node_key=node_key.raw,
                                token_hash=b"",  # no token: matches none
                                name=f"front node {front_id}",
                                nl_key=nl_key,
                                signature=sig,
                                created=now,
                                updated=now,
                                may_init=True,  # every node of the tailnet may, as on Tailscale
                                front_id=front_id,
                            )
                        )
                        ctx.events.append({"event": "front_node_added", "admitted": admitted})
                    elif (now_row.node_key, now_row.nl_key, now_row.signature) != (
                        node_key.raw,
                        nl_key,
                        sig,
                    ):
                        txn.save_node(
                            replace(
                                now_row,
                                node_key=node_key.raw,
                                nl_key=nl_key,
                                signature=sig,
                                updated=now,
                            )
                        )
                        ctx.events.append({"event": "front_node_updated", "admitted": admitted})
                    seq = self._seq(txn, tailnet)
            except _Retry:
                continue
            break
        else:
            raise Conflict("the tailnet changed while this request was checked: try again")
        return {"NodeID": front_id, "Admitted": admitted, "KeySignature": _b64(sig), "Seq": seq}

    def front_delete_node(self, caller: FrontCaller, ctx: RequestContext) -> dict[str, Any]:
        """``DELETE /nodes/{id}``: forget a fed node (an unknown one is no error)."""
        ctx.tailnet, ctx.node_id = caller.tailnet, caller.node_id
        with self.store.write(caller.tailnet) as txn:
            self._front_token_still_valid(txn, caller)
            self._tailnet(txn, caller.tailnet)
            node = txn.front_node(caller.tailnet, caller.node_id)
            if node is not None:
                txn.delete_node(node.node_id)
                ctx.events.append({"event": "front_node_deleted"})
            seq = self._seq(txn, caller.tailnet)
        return {"Seq": seq}

    def _front_token_still_valid(self, txn: Transaction, caller: FrontCaller) -> None:
        self._auth_front_token(txn, caller)

    @staticmethod
    def _seq(txn: Transaction, tailnet: str) -> int:
        t = txn.tailnet(tailnet)
        assert t is not None
        return t.seq

    # -- the relay ---------------------------------------------------------------------------

    def front_relay(
        self, caller: FrontCaller, rpc: str, body: dict[str, Any], ctx: RequestContext
    ) -> dict[str, Any]:
        """Run node RPC *rpc* (``init/begin``, ...) for the node *caller* names."""
        if rpc not in FRONT_RPCS:
            raise NotFound(f"no RPC at /machine/tka/{rpc}")
        ctx.tailnet, ctx.node_id = caller.tailnet, caller.node_id
        return self.handle(f"/machine/tka/{rpc}", caller, body, ctx)

    # -- bulk read and change feed -------------------------------------------------------------

    def front_state(self, tailnet: str) -> dict[str, Any]:
        """``GET /state``: lock status, head and every fed node's signature."""
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            sigs = txn.front_signatures(tailnet)
        b64 = base64.b64encode
        return {
            "Seq": t.seq,
            "Enabled": t.status == STATUS_ENABLED,
            "Disabled": t.status == STATUS_DISABLED,
            "Head": _head_text(t),
            "Signatures": {str(i): b64(s).decode("ascii") for i, s in sigs},
        }

    def front_state_json(self, tailnet: str) -> bytes:
        """:meth:`front_state` as the JSON bytes of the answer, built for speed.

        The answer is a function of the tailnet's sequence number (every
        change it shows moves ``seq``), so the last one built per tailnet is
        kept and served again while ``seq`` stays: a repeated read costs one
        indexed read. A fresh one is built without a ``dict`` in between
        (signature IDs are numbers and base64 needs no JSON escaping).
        """
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            key = (t.seq, t.status, t.head)
            with self._lock:
                cached = self._front_state_cache.get(tailnet)
            if cached is not None and cached[0] == key:
                return cached[1]
            sigs = txn.front_signatures(tailnet)
        b2a = binascii.b2a_base64
        entries = b",".join([b'"%d":"%s"' % (i, b2a(s, newline=False)) for i, s in sigs])
        body = b'{"Seq":%d,"Enabled":%s,"Disabled":%s,"Head":"%s","Signatures":{%s}}\n' % (
            t.seq,
            b"true" if t.status == STATUS_ENABLED else b"false",
            b"true" if t.status == STATUS_DISABLED else b"false",
            _head_text(t).encode("ascii"),
            entries,
        )
        with self._lock:
            self._front_state_cache[tailnet] = (key, body)
            self._front_state_cache.move_to_end(tailnet)
            while len(self._front_state_cache) > _STATE_CACHE_TAILNETS:
                self._front_state_cache.popitem(last=False)
        return body

    def front_seq(self, tailnet: str) -> int:
        """The tailnet's sequence number now (one indexed read)."""
        with self.store.read() as txn:
            return self._tailnet(txn, tailnet).seq

    def front_changes(self, tailnet: str, since: int) -> dict[str, Any] | None:
        """``GET /changes``: what changed after *since*, or ``None`` while nothing did."""
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
            if t.seq == since:
                return None
            reset = since > t.seq or since < t.seq_floor
            changed = [] if reset else txn.front_changes(tailnet, since)
        return {
            "Seq": t.seq,
            "Enabled": t.status == STATUS_ENABLED,
            "Disabled": t.status == STATUS_DISABLED,
            "Head": _head_text(t),
            "HeadChanged": reset or t.head_seq > since,
            "Signatures": {str(i): _b64(s) for i, s in changed},
            "Reset": reset,
        }

    def front_unchanged(self, tailnet: str, since: int) -> dict[str, Any]:
        """The answer of a long poll that saw nothing new (or the news, if it came now)."""
        found = self.front_changes(tailnet, since)
        if found is not None:
            return found
        with self.store.read() as txn:
            t = self._tailnet(txn, tailnet)
        return {
            "Seq": t.seq,
            "Enabled": t.status == STATUS_ENABLED,
            "Disabled": t.status == STATUS_DISABLED,
            "Head": _head_text(t),
            "HeadChanged": False,
            "Signatures": {},
            "Reset": False,
        }


def _fields(row: NodeRow | None) -> tuple[Any, ...] | None:
    if row is None:
        return None
    return (row.node_id, row.node_key, row.nl_key, row.signature)
