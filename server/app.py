"""The ASGI application: Tailscale's TKA RPCs, an admin API and a health check.

Built on Starlette (routing, requests, responses) and nothing else: the wire
shapes are tka's own (:mod:`tka.control.wire`), so no framework model layer
stands between the JSON and the checks. Every endpoint:

* checks the token from the headers first (one indexed read), before it
  reads the body at all: a request without a valid token costs what a 404
  costs, whatever it carries (the rest of it is discarded as it arrives);
* reads the body itself, refusing it with 413 as soon as it passes the path's
  limit (10 MiB for init and sync, 1 MiB otherwise, as Tailscale's client
  reads), whatever the ``Content-Length`` claims, and with 408 when it comes
  slower than :class:`BodyLimits` allows;
* parses every number in a path or query strictly (ASCII digits, bounded);
* accepts ``GET`` with a JSON body, as Tailscale's client sends, and ``POST``;
* answers the hot node RPCs (bootstrap, sync/offer, an empty sync/send,
  map) on the event loop when the service keeps their answer, after one
  batched read of the caller (:mod:`server.node_reads`), and runs every
  other service call in a worker thread;
* answers errors as ``{"error": "...", "code": "..."}`` with a 4xx status for
  anything the caller sent (5xx only when the database fails, or for a bug);
* logs one structured line (no bodies, tokens or secrets).

Routes::

    GET  /healthz
    GET|POST /machine/tka/{init/begin,init/finish,bootstrap,sync/offer,sync/send,
                           disable,sign,affected-sigs}     node token
    GET|POST /machine/register, /machine/map               node token
    GET|POST /admin/tailnets                               admin token
    GET  /admin/tailnets/{name}
    GET|POST /admin/tailnets/{name}/nodes                 GET: a page of nodes, see below
    DELETE /admin/tailnets/{name}/nodes/{id}
    GET  /admin/tailnets/{name}/locked-out                 (both: ?after=ID&limit=N pages,
                                                           "Next": ID while more follow)
    GET  /admin/tailnets/{name}/log?limit=N[&before=HASH]  v1 JSON lock log, a page at a
                                                           time (Tka-Log-Next: HASH)
    GET  /admin/tailnets/{name}/affected-sigs?key=tlpub:...
    PATCH /admin/tailnets/{name}/nodes/{id}                {"MayInit": bool}
    POST /admin/tailnets/{name}/nodes/{id}/token           re-mint the node token
    GET|POST /admin/tokens                                 list / mint admin tokens
    DELETE /admin/tokens/{id}                              revoke an admin token
    /front/v1/tailnets/{name}/...                          front token: see front.py
    GET|POST /admin/tailnets/{name}/front-tokens           list / mint front tokens
    GET  /admin/front-tokens, DELETE /admin/front-tokens/{id}

Tokens travel as ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from tka.aum import hash_from_text, hash_to_text
from tka.control import wire
from tka.control.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthenticated,
    http_status,
)
from tka.control.service import (
    KEPT_RPCS,
    RPCS,
    SMALL_BODY,
    Caller,
    ControlService,
    JoinedRow,
    KeptRow,
    NotKept,
    RequestContext,
)
from tka.control.service.admin import NODE_PAGE
from tka.errors import DecodeError, TKAError
from tka.nlkeys import NLPublic

from .logs import log_event, now_ms
from .node_reads import ReadQueueFull, front_reads, node_reads

__all__ = ["KEPT_BODY_MAX", "BodyLimits", "answer_kept", "create_app", "parse_uint"]

_INT64_MAX: Final = 2**63 - 1
#: Bodies the event loop decodes itself (a poll or an offer is a few hundred
#: bytes): see :func:`answer_kept`.
KEPT_BODY_MAX: Final = 64 * 1024


@dataclass(frozen=True)
class BodyLimits:
    """How slowly a request body may arrive: byte *n* must be in by
    ``start + grace + n / min_rate`` (seconds), else 408 and the connection
    is closed. uvicorn has no body timer of its own."""

    grace: float = 10.0
    min_rate: float = 16 * 1024


def parse_uint(text: str, what: str, maximum: int = _INT64_MAX) -> int:
    """A whole number written in ASCII digits, at most *maximum*; 400 otherwise.

    ``str.isdigit`` alone would accept a superscript two (which ``int``
    refuses) and an Arabic-Indic five (which ``int`` reads as 5).
    """
    if (
        not text.isascii()
        or not text.isdigit()
        or len(text) > len(str(maximum))
        or int(text) > maximum
    ):
        raise BadRequest(f"{what}: expected a whole number from 0 to {maximum}")
    return int(text)


Endpoint = Callable[[Request, RequestContext], Awaitable[Response]]


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")) + "\n",
        status_code=status,
        media_type="application/json",
    )


def _error(status: int, code: str, message: str) -> Response:
    return _json({"error": message, "code": code}, status)


def _token(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def _body(request: Request, limit: int, pace: BodyLimits) -> bytes:
    """The request body, refused as soon as it passes *limit* bytes or comes too slowly."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = parse_uint(declared.strip(), "Content-Length")
        except BadRequest:
            raise BadRequest("Content-Length is not a number") from None
        if size > limit:
            raise PayloadTooLarge(f"request body over the {limit}-byte limit")
    chunks: list[bytes] = []
    total = 0
    start = time.monotonic()
    stream = request.stream()
    while True:
        remaining = start + pace.grace + total / pace.min_rate - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            with anyio.fail_after(remaining):
                chunk = await stream.__anext__()
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise RequestTimeout(
                f"request body too slow: {total} bytes in {time.monotonic() - start:.0f} s"
            ) from None
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"request body over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def answer_kept(
    service: ControlService,
    request: tuple[str, Caller, bytes, dict[str, Any], RequestContext, KeptRow],
    on_thread: Callable[[], Awaitable[Response]],
) -> Response:
    """A hot RPC's answer from memory (see ``ControlService.handle_kept``), else *on_thread*.

    *request* is (path, caller, body, its parsed JSON, context, what the
    caller was authenticated against). Only small bodies are decoded here,
    on the event loop; a larger one (AUMs to verify, a long offer) goes to a
    worker thread whole, where it is answered anyway.
    """
    path, caller, body, obj, ctx, kept = request
    if len(body) <= KEPT_BODY_MAX:
        try:
            out = service.handle_kept(path, caller, obj, ctx, kept)
        except NotKept:
            pass  # not answered from memory: the store's turn, on a worker thread
        else:
            if isinstance(out, bytes):
                return Response(out, media_type="application/json")
            return _json(out)
    return await on_thread()


def _tailnet_param(request: Request) -> str:
    return str(request.path_params["name"])


def _wrap(
    endpoint: Endpoint, error: Callable[[int, str, str], Response] = _error
) -> Callable[[Request], Awaitable[Response]]:
    """Error mapping (answered by *error*) and one structured log line around an endpoint."""

    async def run(request: Request) -> Response:
        ctx = RequestContext()
        start = now_ms()
        code = ""
        try:
            response = await endpoint(request, ctx)
        except TKAError as exc:
            status, code = http_status(exc)
            response = error(status, code, str(exc))
        except ClientDisconnect:
            status, code = 400, "client_disconnected"
            response = error(status, code, "client disconnected")
        except Exception:
            # A bug: say so without details, log where it happened.
            logging.getLogger("tka.server").exception(
                "internal error",
                extra={"fields": {"event": "internal_error", "path": request.url.path}},
            )
            code = "internal"
            response = error(500, code, "internal error")
        if code == "request_timeout":
            # A body too slow to wait for: the connection goes with it.
            response.headers["connection"] = "close"
        # A request refused before its body was read (e.g. no token) keeps
        # its connection: uvicorn throws the rest of the body away as it
        # comes, without buffering it, and the header deadline closes the
        # connection if the client does not finish it and send a new request
        # in time. (Closing at once instead would reset the connection under
        # a client still sending, which then often never sees the answer.)
        fields: dict[str, Any] = {
            "method": request.method,
            "path": request.url.path,
            "status": response.status_code,
            "ms": round(now_ms() - start, 2),
        }
        if ctx.tailnet is not None:
            fields["tailnet"] = ctx.tailnet
        if ctx.node_id is not None:
            fields["node_id"] = ctx.node_id
        if code:
            fields["code"] = code
        log_event(
            "request", logging.INFO if response.status_code < 500 else logging.ERROR, **fields
        )
        for ev in ctx.events:
            log_event(
                str(ev.get("event", "event")),
                tailnet=ctx.tailnet,
                node_id=ctx.node_id,
                **{k: v for k, v in ev.items() if k != "event"},
            )
        return response

    return run


def create_app(
    service: ControlService,
    *,
    on_shutdown: Callable[[], None] | None = None,
    body_limits: BodyLimits | None = None,
) -> Starlette:
    """The ASGI application serving *service*.

    *on_shutdown* runs after the server stopped taking requests and the
    last one finished (uvicorn's graceful shutdown), e.g. to close the store.
    *body_limits* says how slowly a body may arrive.
    """
    pace = body_limits or BodyLimits()
    reads = node_reads(service.store)
    relayed_reads = front_reads(service.store)

    async def _body_of(request: Request, limit: int) -> bytes:
        return await _body(request, limit, pace)

    async def healthz(request: Request, ctx: RequestContext) -> Response:
        await run_in_threadpool(service.store.ping)
        return _json({"status": "ok", "store": service.store.url_scheme})

    async def machine(request: Request, ctx: RequestContext) -> Response:
        path = request.url.path
        spec = RPCS.get(path)
        if spec is None:
            raise NotFound(f"no RPC at {path}")
        # The token first: nothing of the body is read or decoded without one.
        token = _token(request)
        if path in KEPT_RPCS and token is not None:
            kept = await kept_read(token)
            if kept is not None:
                node = service.authenticate_kept(token, kept)
                ctx.tailnet, ctx.node_id = node.tailnet, node.node_id
                body = await _body_of(request, spec.body_limit)
                obj = wire.parse_body(body)
                return await answer_kept(
                    service,
                    (path, token, body, obj, ctx, kept),
                    lambda: on_thread(spec.handler, path, token, obj, ctx),
                )
        known = service.token_recently_valid(token)
        if known is None:
            node = await run_in_threadpool(service.authenticate_node, token)
            known = node.tailnet, node.node_id
        ctx.tailnet, ctx.node_id = known
        body = await _body_of(request, spec.body_limit)
        obj = wire.parse_body(body)
        return await on_thread(spec.handler, path, token, obj, ctx)

    async def on_thread(
        handler: str, path: str, token: str | None, obj: dict[str, Any], ctx: RequestContext
    ) -> Response:
        if handler == "map":
            # Its answer is spliced from bytes kept per tailnet (see SignRPCs.map_json).
            raw = await run_in_threadpool(service.map_json, token, obj, ctx)
            return Response(raw, media_type="application/json")
        out = await run_in_threadpool(service.handle, path, token, obj, ctx)
        return _json(out)

    async def kept_read(token: str) -> JoinedRow | None:
        """The token's node and tailnet, read in a batch (None: take the worker-thread path)."""
        try:
            node_id = service.node_token_id(token)
        except Unauthenticated:
            return None  # refused on the usual path, with its usual answer
        try:
            return await reads.read(node_id)
        except ReadQueueFull:
            return None

    async def admin(request: Request) -> None:
        await run_in_threadpool(service.authenticate_admin, _token(request))

    async def admin_tailnets(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        if request.method == "GET":
            return _json({"Tailnets": await run_in_threadpool(service.tailnets)})
        obj = wire.parse_body(await _body_of(request, SMALL_BODY))
        name = obj.get("Name")
        if not isinstance(name, str):
            raise BadRequest("Name: expected a string")
        ctx.tailnet = name if len(name) <= 63 else None
        return _json(await run_in_threadpool(service.create_tailnet, name), 201)

    async def admin_tailnet(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        return _json(await run_in_threadpool(service.tailnet_status, _tailnet_param(request)))

    async def admin_nodes(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        name = _tailnet_param(request)
        if request.method == "GET":
            return await node_page(request, name, locked_out=False)
        obj = wire.parse_body(await _body_of(request, SMALL_BODY))
        req = wire.decode(wire.AdminRegisterRequest, obj)
        out = await run_in_threadpool(service.register_node, name, req)
        ctx.tailnet, ctx.node_id = name, int(out["NodeID"])
        return _json(out, 201)

    async def admin_node(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        node_id = parse_uint(str(request.path_params["node_id"]), "node ID")
        name = _tailnet_param(request)
        if request.method == "DELETE":
            await run_in_threadpool(service.delete_node, name, node_id)
            return _json({})
        obj = wire.parse_body(await _body_of(request, SMALL_BODY))
        may_init = obj.get("MayInit")
        if not isinstance(may_init, bool):
            raise BadRequest("MayInit: expected true or false")
        return _json(await run_in_threadpool(service.set_may_init, name, node_id, may_init))

    async def admin_node_token(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        node_id = parse_uint(str(request.path_params["node_id"]), "node ID")
        name = _tailnet_param(request)
        out = await run_in_threadpool(service.remint_node_token, name, node_id)
        ctx.tailnet, ctx.node_id = name, node_id
        return _json(out)

    async def admin_tokens(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        if request.method == "GET":
            return _json({"Tokens": await run_in_threadpool(service.admin_tokens)})
        obj = wire.parse_body(await _body_of(request, SMALL_BODY))
        label = obj.get("Label", "")
        if not isinstance(label, str) or len(label) > 200 or not label.isprintable():
            raise BadRequest("Label: at most 200 printable characters")
        token = await run_in_threadpool(service.mint_admin_token, label)
        return _json({"Token": token, "Label": label}, 201)

    async def admin_token(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        token_id = parse_uint(str(request.path_params["token_id"]), "token ID")
        await run_in_threadpool(service.revoke_admin_token, token_id)
        return _json({})

    async def node_page(request: Request, name: str, *, locked_out: bool) -> Response:
        # One page: ?after=ID (a node ID; 0 = from the start) &limit=N.
        q = request.query_params
        after = parse_uint(q.get("after", "0"), "after")
        limit = parse_uint(q.get("limit", str(NODE_PAGE)), "limit", 999_999_999)
        nodes, nxt = await run_in_threadpool(
            service.node_decisions_page, name, after, limit, locked_out=locked_out
        )
        doc: dict[str, Any] = {"Nodes": [wire.encode(n) for n in nodes]}
        if nxt is not None:
            doc["Next"] = nxt
        return _json(doc)

    async def admin_locked_out(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        return await node_page(request, _tailnet_param(request), locked_out=True)

    async def admin_log(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        limit = parse_uint(request.query_params.get("limit", "50"), "limit", 999_999_999)
        before_text = request.query_params.get("before")
        before = None
        if before_text is not None:
            try:
                before = hash_from_text(before_text)
            except DecodeError:
                raise BadRequest("before: expected an AUM hash (base32)") from None
        out, nxt = await run_in_threadpool(
            service.lock_log_page, _tailnet_param(request), limit, before
        )
        response = Response(out, media_type="application/json")
        if nxt is not None:
            # The next page: the same request with ?before=<this> (limit lowered by this page's).
            response.headers["tka-log-next"] = hash_to_text(nxt)
        return response

    async def admin_affected(request: Request, ctx: RequestContext) -> Response:
        await admin(request)
        try:
            key = NLPublic.from_text(request.query_params.get("key", ""))
        except DecodeError:
            raise BadRequest("key: expected tlpub: followed by 64 hex digits") from None
        sigs = await run_in_threadpool(
            service.admin_affected_sigs, _tailnet_param(request), key.raw
        )
        return _json({"Signatures": [base64.b64encode(s).decode() for s in sigs]})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        if request.url.path.startswith("/front/"):
            from .front import front_error

            response = front_error(status, code, str(detail))
        else:
            response = _error(status, code, str(detail))
        log_event("request", method=request.method, path=request.url.path, status=status, code=code)
        return response

    routes = [
        Route("/healthz", _wrap(healthz), methods=["GET"]),
        Route("/machine/{rest:path}", _wrap(machine), methods=["GET", "POST"]),
        Route("/admin/tailnets", _wrap(admin_tailnets), methods=["GET", "POST"]),
        Route("/admin/tailnets/{name}", _wrap(admin_tailnet), methods=["GET"]),
        Route("/admin/tailnets/{name}/nodes", _wrap(admin_nodes), methods=["GET", "POST"]),
        Route(
            "/admin/tailnets/{name}/nodes/{node_id}",
            _wrap(admin_node),
            methods=["DELETE", "PATCH"],
        ),
        Route(
            "/admin/tailnets/{name}/nodes/{node_id}/token",
            _wrap(admin_node_token),
            methods=["POST"],
        ),
        Route("/admin/tokens", _wrap(admin_tokens), methods=["GET", "POST"]),
        Route("/admin/tokens/{token_id}", _wrap(admin_token), methods=["DELETE"]),
        Route("/admin/tailnets/{name}/locked-out", _wrap(admin_locked_out), methods=["GET"]),
        Route("/admin/tailnets/{name}/log", _wrap(admin_log), methods=["GET"]),
        Route("/admin/tailnets/{name}/affected-sigs", _wrap(admin_affected), methods=["GET"]),
    ]
    # The front API (a patched Headscale relaying to this service): server/front.py.
    from .front import ChangeWaiter, front_routes

    waiter = ChangeWaiter()
    service.store.add_change_listener(waiter.notify)
    # Right after /machine: Starlette tries routes in order, and a front
    # relays every node's hot RPCs through them.
    front = front_routes(service, _body_of, admin, waiter, relayed_reads)
    routes[2:2] = front

    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        waiter.start()
        reads.start()
        relayed_reads.start()
        log_event("started", store=service.store.url_scheme)
        try:
            yield
        finally:
            await run_in_threadpool(reads.stop)
            await run_in_threadpool(relayed_reads.stop)
            if on_shutdown is not None:
                await run_in_threadpool(on_shutdown)
            log_event("stopped")

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, 404: http_error, 405: http_error},
        lifespan=lifespan,
    )
    # Called by the server when a graceful shutdown begins (before it waits
    # for the requests in flight): long polls answer instead of holding it.
    app.state.begin_shutdown = waiter.stop
    return app
