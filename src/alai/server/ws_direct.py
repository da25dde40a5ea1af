"""Prepared WebSocket frames written straight to a connection, for stream fan-out.

A stream sends the same chunk to every subscriber with the same filter. Through ASGI
each of those sends wakes the subscriber's task and frames the text again; for a
hundred subscribers that was most of a busy replica's CPU and the spread between the
first and the last delivery (bench/hive_latency.py). Here the frame is made once per
chunk (server frames are unmasked, so it is the same bytes for every connection) and
written to each connection's transport from the fan-out itself.

Only under uvicorn's websockets-sansio protocol (`alai serve` selects it), whose
state we check before each write: handshake done, the connection open (no close
sent or received), and not paused by flow control. Anywhere else (another ASGI
server, the test client) `frame_writer` returns None and the stream uses ordinary
ASGI sends. Data frames do
not touch the protocol's state; uncompressed frames stay valid even where
permessage-deflate was negotiated (RSV1 clear). A refused write is not lost: the
stream queues it and sends it through ASGI, which waits for the connection to drain.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State

RAW_SEND = "alai.raw_send"  # the scope key under which the server's own `send` is kept

try:  # uvicorn[standard] brings it; without it there is nothing to write to
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - the server extra always has it
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]


def keep_raw_send(scope: MutableMapping[str, Any], send: Any) -> None:
    """Called with what the server passed in, before any middleware wraps `send`."""
    if scope.get("type") == "websocket":
        scope[RAW_SEND] = send


def text_frame(text: str) -> bytes:
    """One unmasked, unfragmented text frame."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


def frame_writer(scope: MutableMapping[str, Any]) -> Callable[[bytes], bool] | None:
    """A function that writes prepared frames to this accepted WebSocket and says whether
    it could (False: closing, closed or applying back-pressure); None where unsupported."""
    protocol = getattr(scope.get(RAW_SEND), "__self__", None)
    if WebSocketsSansIOProtocol is None or not isinstance(protocol, WebSocketsSansIOProtocol):
        return None
    transport, writable, conn = protocol.transport, protocol.writable, protocol.conn

    def write(frames: bytes) -> bool:
        if (not protocol.handshake_complete or protocol.close_sent or protocol.disconnected
                or conn.state is not State.OPEN or not writable.is_set() or transport.is_closing()):
            return False
        transport.write(frames)
        return True

    return write
