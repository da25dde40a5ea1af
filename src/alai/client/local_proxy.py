"""`alai start`'s local proxy: 127.0.0.1:11434 forwarded to the control plane with the
user's token, so scripts written for a local Ollama work unchanged on any laptop.

A plain ASGI app (served by uvicorn): every request is passed on as it is — method,
path, query, body, headers but for the hop-by-hop ones and Host/Authorization — with
the bearer token of the active profile, renewed when it is about to expire or when
the control plane answers 401. Responses stream back chunk by chunk. Only
`/_alai/proxy` is answered here (the proxy's own status, for `alai start --status`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from alai._version import __version__

HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
              b"transfer-encoding", b"upgrade", b"host", b"authorization", b"content-length"}
STATUS_PATH = "/_alai/proxy"


class Tokens:
    """The profile's bearer token, renewed through the CLI's own client (in a thread:
    renewing may touch the keyring and a lock file)."""

    def __init__(self, client) -> None:  # alai.client.http.Client
        self._client = client
        self._token: str | None = None
        self._lock = asyncio.Lock()

    async def current(self, *, renew: bool = False) -> str | None:
        async with self._lock:
            login = self._client.profile.login
            if renew or self._token is None or (login is not None and login.expires_within(30)):
                self._token = await asyncio.to_thread(self._client.bearer, renew=renew)
            return self._token

    @property
    def renewable(self) -> bool:
        return self._client.profile.login is not None


class LocalProxy:
    def __init__(self, *, server: str, tokens: Tokens, read_timeout: float = 600.0) -> None:
        self.server = server.rstrip("/")
        self.tokens = tokens
        self.started = time.time()
        self.forwarded = 0
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(read_timeout, connect=10.0),
                                       limits=httpx.Limits(max_connections=256, max_keepalive_connections=32))

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http_request(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._http.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http_request(self, scope: dict[str, Any], receive, send) -> None:
        refusal = _refusal(scope)
        if refusal is not None:
            await _reply(send, refusal[0], {"error": refusal[1]})
            return
        if scope["path"] == STATUS_PATH:
            await _reply(send, 200, {"proxy": "alai", "version": __version__, "server": self.server,
                                     "started": self.started, "forwarded": self.forwarded})
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        query = scope.get("query_string", b"").decode("latin-1")
        url = self.server + scope["raw_path"].decode("latin-1").split("?")[0] + (f"?{query}" if query else "")
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        renew = False
        for _ in range(2):
            try:
                token = await self.tokens.current(renew=renew)
            except Exception as error:  # the login could not be renewed (expired, revoked, server away)
                await _reply(send, 401, {"error": f"alai start: your login could not be renewed ({error}); "
                                                  "run `alai login`"})
                return
            request = self._http.build_request(
                scope["method"], url, content=bytes(body),
                headers=headers + ([(b"authorization", f"Bearer {token}".encode())] if token else []))
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TransportError as error:
                await _reply(send, 502, {"error": f"alai start: the control plane at {self.server} is unreachable "
                                                  f"({type(error).__name__}); check `alai status`"})
                return
            if response.status_code == 401 and not renew and self.tokens.renewable:
                await response.aclose()
                renew = True
                continue
            break
        self.forwarded += 1
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]})
        # The client may hang up mid-answer: stop reading the upstream then (a model is working for it).
        hung_up = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            hung_up.set()
            await response.aclose()

        watcher = asyncio.create_task(watch())
        try:
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception as error:
            if not isinstance(error, httpx.TransportError) and not hung_up.is_set():
                raise
            if not hung_up.is_set():
                # The status line is out: say what happened in the stream, in the stream's own shape.
                message = f"alai start: the connection to the control plane broke ({type(error).__name__})"
                if "text/event-stream" in response.headers.get("content-type", ""):
                    line = "\n\ndata: " + json.dumps({"error": {"message": message, "type": "proxy_error"}}) + "\n\n"
                else:
                    line = "\n" + json.dumps({"error": message}) + "\n"
                await send({"type": "http.response.body", "body": line.encode(), "more_body": True})
        finally:
            watcher.cancel()
            await response.aclose()
        if not hung_up.is_set():
            await send({"type": "http.response.body", "body": b"", "more_body": False})


# What the proxy forwards: the model APIs, nothing else (not the admin or identity API,
# which a web page could otherwise reach with the user's token through localhost).
FORWARDED = ("/api/", "/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/messages", "/v1/completions")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "[::1]", "::1"}


def _host_of(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value.split("]")[0] + "]"
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _refusal(scope: dict[str, Any]) -> tuple[int, str] | None:
    """(status, reason) when a request must not go on with the user's token, else None.

    Host must name this machine (a DNS-rebinding page cannot), an Origin, when sent,
    must be this machine (a page elsewhere cannot drive it), and the path must be one
    of the model APIs."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    if _host_of(headers.get("host", "localhost")) not in LOOPBACK_NAMES:
        return 403, "alai start only answers requests addressed to localhost"
    origin = headers.get("origin")
    if origin and _host_of(origin.split("://", 1)[-1].split("/", 1)[0]) not in LOOPBACK_NAMES:
        return 403, f"alai start does not answer pages from {origin}"
    path = scope.get("path", "/")
    if path not in ("/", STATUS_PATH) and not path.startswith(FORWARDED):
        return 404, f"alai start forwards only the model APIs (Ollama's, OpenAI's, Anthropic's), not {path}"
    return None


async def _reply(send, status: int, document: dict) -> None:
    body = json.dumps(document).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
