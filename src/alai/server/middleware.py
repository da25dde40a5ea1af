"""The outermost layer of every request: request id, access log, metrics, last-resort 500.

A pure ASGI middleware (not BaseHTTPMiddleware) so that streaming responses and
WebSockets pass through untouched and are timed to their real end.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alai.server.metrics import Metrics, route_template
from alai.server.problems import internal_error_body
from alai.wire.problem import PROBLEM_MEDIA_TYPE

REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is kept only if it is short and plain: it goes into logs verbatim.
ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

log = structlog.get_logger("alai.access")
access_logger = logging.getLogger("alai.access")
errors = structlog.get_logger("alai.server")


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            if ACCEPTABLE_REQUEST_ID.match(candidate):
                return candidate
            break
    return os.urandom(16).hex()  # as random as uuid4().hex, without building a UUID


class RequestMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status: dict[str, Any] = {"code": None}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "websocket.accept":
                status["code"] = 101
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            errors.exception("unhandled error", method=scope.get("method"), path=scope.get("path"))
            if scope["type"] == "http" and status["code"] is None:
                await self._send_internal_error(scope, send_with_id, request_id)
            elif status["code"] is None:
                status["code"] = 1011
        finally:
            elapsed = time.perf_counter() - started
            code = status["code"] or (500 if scope["type"] == "http" else 1000)
            route = route_template(scope)
            method = scope.get("method", "WS")
            self.metrics.observe(method=method, route=route, status=code, seconds=elapsed)
            path = scope.get("path", "")
            # Checked here: a filtered call still costs structlog's processor chain.
            if (path not in QUIET_PATHS or code >= 500) and access_logger.isEnabledFor(logging.INFO):
                log.info(
                    "request", method=method, path=path, route=route, status=code,
                    duration_ms=round(elapsed * 1000, 2),
                    client=(scope.get("client") or ("", 0))[0],
                )
            structlog.contextvars.unbind_contextvars("request_id")

    @staticmethod
    async def _send_internal_error(scope: Scope, send: Send, request_id: str) -> None:
        import json

        body = json.dumps(internal_error_body(request_id, scope.get("path", ""))).encode()
        await send({
            "type": "http.response.start",
            "status": 500,
            "headers": [(b"content-type", PROBLEM_MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode())],
        })
        await send({"type": "http.response.body", "body": body})
