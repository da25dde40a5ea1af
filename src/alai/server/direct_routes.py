"""Routes that need nothing from FastAPI's machinery are called directly.

A route qualifies when its path has no parameters, its endpoint takes the `Request`
alone and returns a `Response`, and it has no dependencies besides its scopes
(ScopedRoute checks those itself). For such a route FastAPI's layers between the
server and the endpoint (its telemetry and body-limit wrappers, exception middleware,
route matching, the request/response adapter) change nothing but cost time: about
half of the gateway's added latency on two cores (bench/gateway_overhead.py). The
model gateway's surfaces (`/api/chat`, `/v1/chat/completions` …) are such routes.

`DirectRoutes.dispatch` answers them with the same steps and the same answers:
RequestMiddleware around it (request id, access log, metrics, last-resort 500), the
route in `scope["route"]`, the scope check, the endpoint, and errors through the
handlers `problems.install` registers. A route is taken only when FastAPI's own
matching would choose it for that method and path (checked once, at start-up), so
which code answers a request never depends on this table.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from alai.server.deps import ScopedRoute, check_scopes


class DirectRoutes:
    """(method, path) → route, for the routes that qualify (module docstring)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.table: dict[tuple[str, str], ScopedRoute] = {}
        for route in app.router.routes:
            if not qualifies(route):
                continue
            for method in route.methods:
                if chosen_by_router(app, method, route.path) is route:
                    self.table.setdefault((method, route.path), route)

    def take(self, scope: Scope) -> bool:
        """Whether this request is answered here; if so its route is put in the scope."""
        route = self.table.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if route is None:
            return False
        scope["route"] = route
        return True

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answers a request `take` accepted (behind RequestMiddleware)."""
        route: ScopedRoute = scope["route"]
        # What else FastAPI's router would have put in the scope (url_for and others read them).
        scope["app"] = self.app
        scope["router"] = self.app.router
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        request = Request(scope, receive, send)
        try:
            await check_scopes(request, route.alai_scopes)
            response = await route.endpoint(request)
        except Exception as error:
            handler = self._handler_for(error)
            if handler is None:
                raise  # RequestMiddleware logs it and answers 500
            response = await handler(request, error)
        await response(scope, receive, send)

    def _handler_for(self, error: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
        for kind in type(error).__mro__:
            handler = self.app.exception_handlers.get(kind)
            if handler is not None:
                return handler
        return None


def qualifies(route: Any) -> bool:
    if not isinstance(route, ScopedRoute) or "{" in route.path or not route.methods:
        return False
    dependant = route.dependant
    if dependant.dependencies or dependant.path_params or dependant.query_params or dependant.header_params \
            or dependant.cookie_params or dependant.body_params:
        return False
    if not inspect.iscoroutinefunction(route.endpoint):  # FastAPI runs those in a thread
        return False
    signature = inspect.signature(route.endpoint, eval_str=True)
    parameters = list(signature.parameters)
    if parameters != [dependant.request_param_name]:
        return False
    returns = signature.return_annotation
    return inspect.isclass(returns) and issubclass(returns, Response)


def chosen_by_router(app: FastAPI, method: str, path: str) -> APIRoute | None:
    """The route FastAPI's router would hand a request for `method path` to."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [], "query_string": b""}
    for route in app.router.routes:
        if route.matches(scope)[0] == Match.FULL:
            return route
    return None
