"""The front API over HTTP: what a patched Headscale calls (``/front/v1/...``).

The contract is ``integrations/headscale/FRONT-API.md``; the logic is
:mod:`tka.control.service.front`. Every route checks the front token from
the headers first (one indexed read), before any body is read, and answers
errors as ``{"error": CODE, "message": TEXT}``::

    PUT|DELETE /front/v1/tailnets/{name}/nodes/{id}          node feed
    POST /front/v1/tailnets/{name}/machine/tka/{rpc}         relay (Tka-Node-Id)
    GET  /front/v1/tailnets/{name}/state                     bulk read
    GET  /front/v1/tailnets/{name}/changes?since=N&wait=S    change feed (long poll)

and, for admins (admin token)::

    GET|POST /admin/tailnets/{name}/front-tokens             list / mint
    GET  /admin/front-tokens                                 list every front token
    DELETE /admin/front-tokens/{id}                          revoke

A ``/changes`` long poll holds neither a database connection nor a worker
thread while it waits: it checks the tailnet's sequence number (a short
read in a worker thread), then sleeps on the event loop until this process
commits a change to the tailnet or :data:`POLL_INTERVAL` passes (another
replica's change is seen at the next check), and so on until ``wait``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tka.control import wire
from tka.control.errors import BadRequest, NotFound
from tka.control.service import (
    FRONT_RPCS,
    KEPT_RPCS,
    RPCS,
    SMALL_BODY,
    ControlService,
    FrontCaller,
    RequestContext,
)
from tka.control.service.front import MAX_WAIT
from tka.control.store import FrontKey, FrontRow

from .app import _json, _token, _wrap, answer_kept, parse_uint
from .node_reads import BatchedReads, ReadQueueFull

__all__ = ["POLL_INTERVAL", "ChangeWaiter", "front_error", "front_routes"]

#: How often a waiting long poll looks at the database (other replicas' changes).
POLL_INTERVAL: Final = 0.5
_DEFAULT_WAIT: Final = 25
_UINT64_MAX: Final = 2**64 - 1


def front_error(status: int, code: str, message: str) -> Response:
    """An error answer of the front API: ``{"error": CODE, "message": TEXT}``."""
    return _json({"error": code, "message": message}, status)


class ChangeWaiter:
    """Wakes long polls when this process commits a change to their tailnet.

    :meth:`notify` is the store's change listener (called from worker
    threads after a commit); waiters sleep on the event loop.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self.stopping = False
        """The server is shutting down: long polls answer at once."""

    def start(self) -> None:
        """Bind to the running event loop (at application start)."""
        self._loop = asyncio.get_running_loop()

    def notify(self, tailnet: str) -> None:
        """A change to *tailnet* committed (any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake, tailnet)

    def _wake(self, tailnet: str) -> None:
        event = self._events.pop(tailnet, None)
        if event is not None:
            event.set()

    def stop(self) -> None:
        """Shutdown began (on the event loop): wake every long poll, and keep none waiting.

        Otherwise a long poll would hold a graceful shutdown for up to its
        ``wait``; the front polls again, at this or another replica.
        """
        self.stopping = True
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    def event(self, tailnet: str) -> asyncio.Event:
        """The event the next change to *tailnet* sets (take it before checking)."""
        found = self._events.get(tailnet)
        if found is None:
            found = self._events[tailnet] = asyncio.Event()
        return found


def front_routes(
    service: ControlService,
    body_of: Callable[[Request, int], Awaitable[bytes]],
    admin: Callable[[Request], Awaitable[None]],
    waiter: ChangeWaiter,
    reads: BatchedReads[FrontKey, FrontRow],
) -> list[Route]:
    """The front API's routes (and the admin routes for front tokens)."""

    def wrap(
        endpoint: Callable[[Request, RequestContext], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        return _wrap(endpoint, front_error)

    async def front(request: Request, ctx: RequestContext) -> FrontCaller:
        # The token first: nothing of the body is read without one.
        name = str(request.path_params["name"])
        ctx.tailnet = name if len(name) <= 63 else None
        return await run_in_threadpool(service.authenticate_front, _token(request), name)

    def node_id(text: str, what: str) -> int:
        return parse_uint(text.strip(), what, _UINT64_MAX)

    async def feed(request: Request, ctx: RequestContext) -> Response:
        caller = await front(request, ctx)
        caller = replace(caller, node_id=node_id(str(request.path_params["node_id"]), "node ID"))
        if request.method == "DELETE":
            return _json(await run_in_threadpool(service.front_delete_node, caller, ctx))
        obj = wire.parse_body(await body_of(request, SMALL_BODY))
        return _json(await run_in_threadpool(service.front_put_node, caller, obj, ctx))

    async def relay(request: Request, ctx: RequestContext) -> Response:
        fast = await relay_kept(request, ctx)
        if fast is not None:
            return fast
        caller = await front(request, ctx)
        rpc = str(request.path_params["rpc"])
        if rpc not in FRONT_RPCS:
            raise NotFound(f"no RPC at /machine/tka/{rpc}")
        header = request.headers.get("tka-node-id")
        if header is None:
            raise BadRequest("Tka-Node-Id: required (the node the front authenticated)")
        caller = replace(caller, node_id=node_id(header, "Tka-Node-Id"))
        ctx.node_id = caller.node_id
        body = await body_of(request, RPCS[f"/machine/tka/{rpc}"].body_limit)
        obj = wire.parse_body(body)
        return _json(await run_in_threadpool(service.front_relay, caller, rpc, obj, ctx))

    async def relay_kept(request: Request, ctx: RequestContext) -> Response | None:
        """A hot RPC relayed for a node, authenticated by a batched read (see app.machine).

        ``None``: take the usual path (which answers every error the usual way).
        """
        rpc = str(request.path_params["rpc"])
        path = f"/machine/tka/{rpc}"
        header = request.headers.get("tka-node-id")
        if rpc not in FRONT_RPCS or path not in KEPT_RPCS or header is None:
            return None
        try:
            nid = node_id(header, "Tka-Node-Id")
        except BadRequest:
            return None
        name = str(request.path_params["name"])
        token = _token(request)
        key = service.front_read_key(token, name, nid)
        if key is None:
            return None
        try:
            kept = await reads.read(key)
        except ReadQueueFull:
            return None
        ctx.tailnet = name
        caller = service.authenticate_front_kept(token, name, nid, kept)
        ctx.node_id = nid
        body = await body_of(request, RPCS[path].body_limit)
        obj = wire.parse_body(body)

        async def on_thread() -> Response:
            return _json(await run_in_threadpool(service.front_relay, caller, rpc, obj, ctx))

        return await answer_kept(service, (path, caller, body, obj, ctx, kept), on_thread)

    async def state(request: Request, ctx: RequestContext) -> Response:
        caller = await front(request, ctx)
        body = await run_in_threadpool(service.front_state_json, caller.tailnet)
        return Response(body, media_type="application/json")

    async def changes(request: Request, ctx: RequestContext) -> Response:
        caller = await front(request, ctx)
        q = request.query_params
        if "since" not in q:
            raise BadRequest("since: required (the Seq of the front's copy)")
        since = parse_uint(q["since"], "since")
        wait = parse_uint(q.get("wait", str(_DEFAULT_WAIT)), "wait", MAX_WAIT)
        deadline = time.monotonic() + wait
        tailnet = caller.tailnet
        while True:
            woken = waiter.event(tailnet)  # before the check: a change after it wakes us
            found: dict[str, Any] | None = await run_in_threadpool(
                service.front_changes, tailnet, since
            )
            if found is not None:
                return _json(found)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or waiter.stopping or await request.is_disconnected():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), min(POLL_INTERVAL, remaining))
        return _json(await run_in_threadpool(service.front_unchanged, tailnet, since))

    async def admin_front_tokens(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        name = str(request.path_params["name"])
        if request.method == "GET":
            return _json({"Tokens": await run_in_threadpool(service.front_tokens, name)})
        obj = wire.parse_body(await body_of(request, SMALL_BODY))
        label = obj.get("Label", "")
        if not isinstance(label, str) or len(label) > 200 or not label.isprintable():
            raise BadRequest("Label: at most 200 printable characters")
        ctx.tailnet = name if len(name) <= 63 else None
        return _json(await run_in_threadpool(service.mint_front_token, name, label), 201)

    async def admin_all_front_tokens(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        return _json({"Tokens": await run_in_threadpool(service.front_tokens, None)})

    async def admin_front_token(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        token_id = parse_uint(str(request.path_params["token_id"]), "token ID")
        await run_in_threadpool(service.revoke_front_token, token_id)
        return _json({})

    base = "/front/v1/tailnets/{name}"
    return [
        Route(base + "/nodes/{node_id}", wrap(feed), methods=["PUT", "DELETE"]),
        Route(base + "/machine/tka/{rpc:path}", wrap(relay), methods=["POST"]),
        Route(base + "/state", wrap(state), methods=["GET"]),
        Route(base + "/changes", wrap(changes), methods=["GET"]),
        Route(
            "/admin/tailnets/{name}/front-tokens",
            _wrap(admin_front_tokens),
            methods=["GET", "POST"],
        ),
        Route("/admin/front-tokens", _wrap(admin_all_front_tokens), methods=["GET"]),
        Route("/admin/front-tokens/{token_id}", _wrap(admin_front_token), methods=["DELETE"]),
    ]
