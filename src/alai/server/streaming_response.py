"""A StreamingResponse that watches for the client going away with one plain task.

Starlette's StreamingResponse runs the stream and a disconnect listener in an anyio
task group per response (for servers below ASGI 2.4, uvicorn among them); on two
cores that costs about 0.5 ms of the gateway's time to first token
(bench/gateway_overhead.py). This one streams in the request's own task and lets one
watcher task cancel it when `http.disconnect` arrives, so a client that hangs up
still stops the stream, and with it the upstream request (the model stops
generating), as Starlette's does.
"""

from __future__ import annotations

import asyncio

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class WatchedStreamingResponse(StreamingResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        streaming = asyncio.current_task()
        disconnected = False

        async def watch() -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected = True
            streaming.cancel()

        # The watcher only runs while the stream awaits, so its cancel always lands
        # inside stream_response, never after it.
        watcher = asyncio.create_task(watch(), name="client-disconnect-watch")
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not disconnected:
                raise
            streaming.uncancel()  # the client left: an end of the response, not of the task
        finally:
            watcher.cancel()
        if self.background is not None and not disconnected:
            await self.background()
