"""The TKA RPC handlers and admin operations, as plain functions over a store.

:class:`ControlService` is everything a control plane needs to run tailnet
lock for many tailnets, without any web framework: it authenticates callers,
validates every input, applies it in one store transaction and returns the
response body. ``tka_server`` puts it behind HTTP; another control plane can
call it directly. It never holds a private signing key: it only verifies.

What it verifies, RPC by RPC (``tailcfg/tka.go`` names):

``init/begin``
    Only a node registered with ``may_init``. The genesis decodes, is a
    parentless checkpoint, repeats no key ID and carries no more signatures
    than its state has keys (refused before any signature is checked), is
    well formed and is signed by keys its own state trusts (and by the
    caller's registered tailnet-lock key, when one is registered); it is not
    a replay of an authority disabled before. Kept as pending; the answer
    lists every node.
``init/finish``
    Only the node that began may finish; every registered node needs a
    signature that admits it under the genesis; a support disablement secret
    must match a disablement value. Then genesis and signatures are stored
    and enforcement starts, all in one transaction.
``bootstrap``
    The genesis for a node without an authority; the disablement secret once
    lock was disabled (kept for nodes that were offline).
``sync/offer``, ``sync/send``
    Tailscale's sync: AUMs the node lacks; AUMs the service lacks (at most
    :data:`MAX_SEND_AUMS`, Tailscale's ``maxSyncIter``), each verified
    against the chain (a fork is resolved by Tailscale's rules) with no
    transaction open. An interactive send whose AUMs lose a fork is refused
    and nothing is kept.
``disable``
    The secret must derive to a disablement value (Argon2, constant-time).
    Argon2 runs only for an authenticated node, :data:`DISABLE_ATTEMPTS`
    attempts per node per :data:`DISABLE_WINDOW` seconds (counted in the
    database, so shared by every process and replica) and at most
    :data:`ARGON2_CONCURRENCY` at a time per process.
``sign``
    The signature must admit a registered node's key under the current head.
``affected-sigs``
    The valid signatures rooted in a key.

The cost of a request is bounded before any work that an attacker could
make expensive: the caller is authenticated first (one indexed read), then
signatures are counted (no AUM may repeat a key ID or carry more signatures
than there are keys that could sign it), then verified. Verification never
runs inside a write transaction: each write reads and verifies in a read
transaction (or none), then takes the tailnet's write lock, checks that the
tailnet's row (head, status, pending genesis: its ``version``) is still what
was verified against, and writes; if it moved, the request is redone (a few
times, then 409).

Errors are :mod:`tka.control.errors` classes (see there for the statuses).

The service is split by concern, one module each: :mod:`._base` (limits,
tokens, the RPC table, the authority cache), :mod:`.auth` (who is calling),
:mod:`.init`, :mod:`.sync`, :mod:`.sign` (sign, disable, affected-sigs,
register, map), :mod:`.admin` and :mod:`.front` (a front such as a patched
Headscale: its node feed, relayed RPCs, bulk read and change feed; see
``integrations/headscale/FRONT-API.md``). :class:`ControlService` puts them
together; every name importable from here before the split still is.
"""

from __future__ import annotations

import json
from typing import Any, Final, cast

from tka.control import wire
from tka.control.service._base import (
    ARGON2_CONCURRENCY,
    DISABLE_ATTEMPTS,
    DISABLE_WINDOW,
    KEPT_RPCS,
    LARGE_BODY,
    MAX_LOG_LIMIT,
    MAX_SECRET_BYTES,
    MAX_SEND_AUMS,
    RPCS,
    SMALL_BODY,
    Caller,
    JoinedRow,
    KeptRow,
    NotKept,
    RequestContext,
    RPCSpec,
    hash_token,
)
from tka.control.service.admin import AdminOps
from tka.control.service.front import FRONT_RPCS, FrontCaller, FrontOps
from tka.control.service.init import InitRPCs
from tka.control.service.sign import SignRPCs
from tka.control.service.sync import SyncRPCs

__all__ = [
    "ARGON2_CONCURRENCY",
    "DISABLE_ATTEMPTS",
    "DISABLE_WINDOW",
    "FRONT_RPCS",
    "KEPT_RPCS",
    "LARGE_BODY",
    "MAX_LOG_LIMIT",
    "MAX_SECRET_BYTES",
    "MAX_SEND_AUMS",
    "RPCS",
    "SMALL_BODY",
    "Caller",
    "ControlService",
    "FrontCaller",
    "JoinedRow",
    "KeptRow",
    "NotKept",
    "RPCSpec",
    "RequestContext",
    "hash_token",
]


#: Encoded sync/offer answers :meth:`ControlService.handle_kept` keeps.
_OFFER_JSON_MEMO: Final = 1024


class ControlService(InitRPCs, SyncRPCs, SignRPCs, AdminOps, FrontOps):
    """Tailnet lock for many tailnets over one :class:`~tka.control.store.ControlStore`.

    Thread-safe: every method runs in its own store transaction. *clock*
    returns Unix time. *admission* is shared so its decision cache is too.
    """

    def handle_kept(
        self, path: str, token: Caller, body: dict[str, Any], ctx: RequestContext, kept: KeptRow
    ) -> dict[str, Any] | bytes:
        """Answer the node RPC at *path* from memory, or raise :class:`NotKept`.

        *kept* is what the caller's token names, as read (in one statement,
        or one read transaction for a front's relay: see :data:`KeptRow`)
        just before: the caller is authenticated against it exactly as
        :meth:`handle` authenticates against the store, and the answer is
        one kept for the tailnet's version read there. For the HTTP layer's
        event loop, which must not wait on the store: no store access, no
        lock held for longer than a dictionary lookup. :class:`NotKept` (for
        a path outside :data:`KEPT_RPCS`, or an answer not kept) means: run
        :meth:`handle` (or ``map_json``) on a worker thread instead. The
        answer is a response body, or (map) its JSON bytes.
        """
        if path not in KEPT_RPCS:
            raise NotKept
        spec = RPCS[path]
        request = wire.decode(spec.request, body)
        if path == "/machine/map":
            if isinstance(token, FrontCaller) or token is None:
                raise NotKept  # a front relays /machine/tka/* only: refused by handle
            return self.map_kept(token, request, ctx, cast(JoinedRow, kept))
        response = getattr(self, spec.handler)(token, request, ctx, kept=kept)
        if path == "/machine/tka/sync/offer":
            return self._offer_json(response)
        return wire.encode(response)

    def _offer_json(self, response: wire.SyncOfferResponse) -> bytes:
        """A kept sync/offer answer as JSON, encoded once per answer object.

        The answers themselves are kept (see :meth:`SyncRPCs.sync_offer`);
        the memo holds each object it encoded, so an ID is never reused
        while its entry lives.
        """
        with self._lock:
            memo = self._offer_json_memo.get(id(response))
        if memo is not None and memo[0] is response:
            return memo[1]
        raw = (json.dumps(wire.encode(response), separators=(",", ":")) + "\n").encode()
        with self._lock:
            self._offer_json_memo[id(response)] = (response, raw)
            while len(self._offer_json_memo) > _OFFER_JSON_MEMO:
                self._offer_json_memo.pop(next(iter(self._offer_json_memo)))
        return raw
