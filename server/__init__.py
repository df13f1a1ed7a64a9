"""tka's control service over HTTP (installed as the ``tka_server`` package).

:func:`tka_server.app.create_app` wraps a :class:`~tka.control.service.ControlService`
in an ASGI application; :func:`tka_server.run.serve` runs it under uvicorn
(``tka serve``). (The test harness that runs a real server lives with the
tests, in ``tests/_server_harness.py``: it is not part of the package.)
Install with ``pip install 'tka[server]'``.

Why Starlette and uvicorn: both are small, widely deployed and actively
maintained (Encode), typed, and add no model layer of their own: the RPC
bodies must match Tailscale's ``tailcfg`` JSON exactly (Go field names,
base64 bytes, GET with a body), which :mod:`tka.control.wire` already does,
so a framework that generates validation and schemas from annotations
(FastAPI, Litestar) would only stand in the way. Starlette gives routing,
streaming request bodies (so size limits apply before a body is buffered)
and lifespan hooks; uvicorn gives HTTP/1.1 with keep-alive, TLS, and a
graceful shutdown on SIGTERM that lets requests in flight finish. The
database work is blocking (sqlite3, psycopg) and runs in Starlette's
worker threads.
"""
