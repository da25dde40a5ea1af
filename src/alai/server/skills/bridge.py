"""Streaming what blocking code writes: a producer runs in a worker thread and writes
bytes; the event loop reads them as an async iterator (for StreamingResponse).

The buffer between the two is bounded, so a slow client slows the producer down
instead of filling memory. When the reader goes away (client disconnected), the
producer's next write raises and its thread ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import anyio
import anyio.from_thread
import anyio.to_thread

CHUNK_BYTES = 64 * 1024
# Running producers, so that their tasks are not garbage-collected mid-flight.
_producers: set[asyncio.Task] = set()


class _Batcher:
    """Gathers small writes (pkt-lines, tar headers) into chunks of CHUNK_BYTES."""

    def __init__(self, send: Callable[[bytes], None]) -> None:
        self._send = send
        self._parts: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        self._parts.append(bytes(data))
        self._size += len(data)
        if self._size >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            chunk = b"".join(self._parts)
            self._parts, self._size = [], 0
            self._send(chunk)


async def stream_from_thread(produce: Callable[[Callable[[bytes], None]], None], *,
                             buffer: int = 8) -> AsyncIterator[bytes]:
    """Runs `produce(write)` in a worker thread and yields what it writes. An exception
    of the producer is raised here, after the bytes written before it."""
    send, receive = anyio.create_memory_object_stream[bytes](buffer)
    failure: list[BaseException] = []

    def run_in_thread() -> None:
        batcher = _Batcher(lambda chunk: anyio.from_thread.run(send.send, chunk))
        produce(batcher.write)
        batcher.flush()

    async def run() -> None:
        async with send:
            try:
                await anyio.to_thread.run_sync(run_in_thread)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the reader went away
            except Exception as error:
                failure.append(error)

    task = asyncio.create_task(run(), name="skills-stream")
    _producers.add(task)
    task.add_done_callback(_producers.discard)
    try:
        async for chunk in receive:
            yield chunk
        if failure:
            raise failure[0]
    finally:
        receive.close()
