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
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # the server's receive failed: nothing left to watch
                return
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
            # Our own cancel: the client left, an end of the response, not of the task.
            # Another one at the same time (a shutdown, a timeout around us) still counts.
            if streaming.uncancel() > 0:
                raise
            # The body's generator may have been stopped in a send, not in its own code:
            # close it now, so that what it does at its end (usage records, giving the
            # upstream connection back) happens now, not when it is garbage-collected.
            closing = getattr(self.body_iterator, "aclose", None)
            if closing is not None:
                await closing()
        finally:
            watcher.cancel()
        if self.background is not None:
            await self.background()
