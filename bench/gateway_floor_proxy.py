"""The floor for bench/gateway_overhead.py: the least a Python proxy can add on this machine.

A bare ASGI app (no framework, no authentication, no routing, no usage records) that
forwards each POST to UPSTREAM with aiohttp, the client the gateway uses, and passes the
answer through chunk by chunk; served by the same uvicorn (uvloop, httptools) as
`alai serve`. Not a component: a measuring stick.

    UPSTREAM=http://127.0.0.1:11434 uvicorn gateway_floor_proxy:app --port 8099
"""

from __future__ import annotations

import os

import aiohttp

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:11434")
_session: aiohttp.ClientSession | None = None


async def app(scope, receive, send) -> None:
    global _session
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _session is not None:
                    await _session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if _session is None:
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    async with _session.post(UPSTREAM + scope["path"], data=body,
                             headers={"Content-Type": "application/json"}) as answer:
        await send({"type": "http.response.start", "status": answer.status,
                    "headers": [(b"content-type", answer.headers.get("content-type", "application/json").encode())]})
        async for chunk in answer.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
