"""``disable``, ``sign``, ``affected-sigs``, and the lock subset of ``register`` and ``map``."""

from __future__ import annotations

import hmac
from dataclasses import replace

from tka.control import wire
from tka.control.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
)
from tka.control.service._base import (
    _NODE_TOKEN_PREFIX,
    _WRITE_ATTEMPTS,
    MAX_SECRET_BYTES,
    SMALL_BODY,
    Caller,
    RequestContext,
    _parse_token,
    _records,
    _Retry,
    _tlpub,
)
from tka.control.service.auth import Auth
from tka.control.store import (
    STATUS_DISABLED,
    STATUS_ENABLED,
    NodeRow,
)
from tka.errors import DecodeError, VerificationError
from tka.nlkeys import NodePublic
from tka.sig import NodeKeySignature, SigKind


class SignRPCs(Auth):
    """Signatures and disablement."""

    def disable(
        self, token: Caller, req: wire.DisableRequest, ctx: RequestContext
    ) -> wire.EmptyResponse:
        """``/machine/tka/disable``: turn lock off with a disablement secret."""
        if len(req.disablement_secret) > MAX_SECRET_BYTES:
            raise BadRequest(f"DisablementSecret: longer than {MAX_SECRET_BYTES} bytes")
        with self.store.read() as txn:
            node, _ = self._auth_node(txn, token, req.node_key, ctx)
        # Argon2 is slow on purpose: only for an authenticated node, rate
        # limited, and before taking the tailnet's lock.
        derived = self._disablement_kdf(node, req.disablement_secret)
        with self._node_write(token, req.node_key, ctx, tailnet=node.tailnet) as (txn, _, t):
            if t.status == STATUS_DISABLED:
                raise Conflict("tailnet lock is already disabled in this tailnet")
            self._require_enabled(t)
            authority = self._cached_authority(txn, t)
            assert req.head is not None
            if txn.aum_storage(t.name).get(req.head) is None:
                raise Conflict("Head is not an AUM the service holds: sync first")
            found = False
            for value in authority.state.disablement_values or ():
                found |= hmac.compare_digest(derived, value)
            if not found:
                raise Forbidden("the disablement secret does not match any disablement value")
            txn.add_disabled_state(t.name, *authority.state_ids)
            txn.save_tailnet(
                replace(t, status=STATUS_DISABLED, disablement_secret=req.disablement_secret),
                self.clock(),
            )
        ctx.events.append({"event": "lock_disabled", "head": authority.head.hash_text})
        return wire.EmptyResponse()

    def sign(
        self, token: Caller, req: wire.SubmitSignatureRequest, ctx: RequestContext
    ) -> wire.EmptyResponse:
        """``/machine/tka/sign``: keep a signature that admits a registered node."""
        try:
            sig = NodeKeySignature.from_bytes(req.signature)
        except DecodeError as exc:
            raise BadRequest(f"Signature: not a node-key signature ({exc})") from None
        if sig.sig_kind == SigKind.CREDENTIAL:
            raise VerificationError("Signature: a credential signature admits no node by itself")
        try:
            target_key = NodePublic.from_binary(sig.pubkey or b"")
        except DecodeError:
            raise BadRequest("Signature: names no node key") from None
        for _ in range(_WRITE_ATTEMPTS):
            with self.store.read() as txn:
                _, t = self._auth_node(txn, token, req.node_key, ctx)
                self._require_enabled(t)
                target = txn.node_by_key(t.name, target_key.raw)
                if target is None:
                    raise NotFound(
                        f"no node with {target_key.text()} is registered in this tailnet"
                    )
                authority = self._cached_authority(txn, t)
            # Verified outside the write lock, against the head just read.
            d = self.admission.decide(authority, target.node_key, req.signature)
            if not d.admitted:
                raise VerificationError(f"Signature: {d.reason}")
            try:
                with self._node_write(token, req.node_key, ctx, tailnet=t.name) as (txn, _, t2):
                    if t2.version != t.version:
                        raise _Retry  # the head moved: decide again
                    now_target = txn.node_by_key(t.name, target_key.raw)
                    if now_target is None:
                        raise NotFound(
                            f"no node with {target_key.text()} is registered in this tailnet"
                        )
                    if now_target.signature != req.signature:
                        txn.save_node(
                            replace(now_target, signature=req.signature, updated=self.clock())
                        )
            except _Retry:
                continue
            break
        else:
            raise Conflict("the tailnet's chain moved while this request was checked: try again")
        ctx.events.append(
            {
                "event": "node_signed",
                "target_node": target.node_id,
                "by": _tlpub(d.signing_key or b""),
            }
        )
        return wire.EmptyResponse()

    def affected_sigs(
        self, token: Caller, req: wire.SignaturesUsingKeyRequest, ctx: RequestContext
    ) -> wire.SignaturesUsingKeyResponse:
        """``/machine/tka/affected-sigs``: the valid signatures made by one key."""
        if len(req.key_id) != 32:
            raise BadRequest(f"KeyID: {len(req.key_id)} bytes, want 32")
        with self.store.read() as txn:
            _, t = self._auth_node(txn, token, req.node_key, ctx)
            self._require_enabled(t)
            authority = self._cached_authority(txn, t)
            found = self.admission.affected_signatures(
                authority, _records(txn.nodes(t.name)), req.key_id
            )
        sigs = tuple(n.signature or b"" for n in found)
        if sum(len(s) * 4 // 3 + 8 for s in sigs) > SMALL_BODY - 1024:
            # Tailscale's client reads at most 1 MiB of this answer.
            raise Conflict(f"{len(sigs)} signatures use this key: more than one answer can carry")
        return wire.SignaturesUsingKeyResponse(sigs)

    def register(
        self, token: str | None, req: wire.RegisterRequest, ctx: RequestContext
    ) -> wire.RegisterResponse:
        """``/machine/register`` (rotation subset): move a node to a new node key."""
        new_key = req.node_key
        assert new_key is not None
        if req.node_key_signature:
            try:
                NodeKeySignature.from_bytes(req.node_key_signature)
            except DecodeError as exc:
                raise BadRequest(f"NodeKeySignature: not a node-key signature ({exc})") from None
        with self.store.read() as txn:
            node_id, _ = _parse_token(token, _NODE_TOKEN_PREFIX)
            current = txn.node(node_id)
        if (
            current is not None
            and current.node_key == new_key.raw
            and (req.node_key_signature in (b"", current.signature))
        ):
            # A retried rotation that already happened: answer as before.
            with self.store.read() as txn:
                node, t = self._auth_node(txn, token, new_key, ctx)
            return wire.RegisterResponse(True, node.signature or b"")
        sig = req.node_key_signature or None
        for _ in range(_WRITE_ATTEMPTS):
            with self.store.read() as txn:
                node, t = self._auth_node(txn, token, req.old_node_key, ctx, "OldNodeKey")
                authority = self._cached_authority(txn, t) if t.status == STATUS_ENABLED else None
            if authority is not None:
                if sig is None:
                    raise VerificationError(
                        "NodeKeySignature: required while tailnet lock is enabled"
                    )
                # Verified outside the write lock, against the head just read.
                d = self.admission.decide(authority, new_key.raw, sig)
                if not d.admitted:
                    raise VerificationError(f"NodeKeySignature: {d.reason}")
            try:
                with self._node_write(token, req.old_node_key, ctx, "OldNodeKey", t.name) as (
                    txn,
                    node,
                    t2,
                ):
                    if t2.version != t.version:
                        raise _Retry
                    other = txn.node_by_key(t.name, new_key.raw)
                    if other is not None and other.node_id != node.node_id:
                        raise Conflict("NodeKey: already registered to another node")
                    txn.save_node(
                        replace(node, node_key=new_key.raw, signature=sig, updated=self.clock())
                    )
            except _Retry:
                continue
            break
        else:
            raise Conflict("the tailnet's chain moved while this request was checked: try again")
        ctx.events.append({"event": "node_key_rotated"})
        return wire.RegisterResponse(True, sig or b"")

    def map(self, token: str | None, req: wire.MapRequest, ctx: RequestContext) -> wire.MapResponse:
        """``/machine/map`` (lock subset): the head and the peers the authority admits."""
        with self.store.read() as txn:
            node, t = self._auth_node(txn, token, req.node_key, ctx)
            nodes = txn.nodes(t.name)
            info: wire.TKAInfo | None = None
            admitted = {n.node_id for n in nodes}
            if t.status == STATUS_ENABLED:
                authority = self._cached_authority(txn, t)
                info = wire.TKAInfo(head=authority.head_hash)
                admitted = {
                    d.node.node_id
                    for d in self.admission.evaluate(authority, _records(nodes))
                    if d.admitted
                }
            elif t.status == STATUS_DISABLED:
                info = wire.TKAInfo(disabled=True)

        def entry(n: NodeRow) -> wire.MapNode:
            return wire.MapNode(n.node_id, NodePublic(n.node_key), n.signature or b"")

        return wire.MapResponse(
            entry(node),
            tuple(entry(n) for n in nodes if n.node_id != node.node_id and n.node_id in admitted),
            info,
        )
