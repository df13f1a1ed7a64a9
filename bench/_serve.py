"""``tka serve`` with one more route, for bench/run.py's server workloads (not shipped).

Runs the real ``tka serve`` (same CLI, same uvicorn/h11 protocol, connection
guard, Starlette routing and request wrapper) with ``/bench/constant?size=N``
added to its application: the *bare stack*, answering N constant bytes after
reading the request body exactly as every endpoint does. Timed side by side
with the real RPCs on the same process, it is what the service's answers
cost without the service.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _patch() -> None:
    import tka_server.app as app_mod
    import tka_server.run as run_mod
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    original = app_mod.create_app
    constants: dict[int, bytes] = {}

    def create_app(service: Any, **kwargs: Any) -> Any:
        app = original(service, **kwargs)
        pace = kwargs.get("body_limits") or app_mod.BodyLimits()

        async def constant(request: Request, ctx: Any) -> Response:
            await app_mod._body(request, 1024 * 1024, pace)
            size = app_mod.parse_uint(request.query_params.get("size", "2"), "size", 1 << 26)
            body = constants.get(size)
            if body is None:
                body = constants[size] = b"{" + b" " * max(size - 3, 0) + b"}\n"
            return Response(body, media_type="application/json")

        app.router.routes.insert(
            0, Route("/bench/constant", app_mod._wrap(constant), methods=["GET", "POST"])
        )
        return app

    run_mod.create_app = create_app  # type: ignore[assignment]


if __name__ == "__main__":
    _patch()
    from tka_cli.main import main

    sys.exit(main())
