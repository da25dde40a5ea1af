"""Following a Server-Sent Events stream of the control plane, across dropped connections.

`follow` yields (event, data) for each message with data, forever. The first
connection's errors are raised (a wrong server or token should not spin); after
that, lost connections and 5xx/429 answers are retried with backoff, RECONNECT_FIRST
doubling up to RECONNECT_MAX, resuming after the last `id:` seen (Last-Event-ID).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from alai.client import http

RECONNECT_FIRST, RECONNECT_MAX = 0.5, 10.0


@dataclass(frozen=True)
class SseMessage:
    id: str | None  # the last event id as of this message (it carries over, as in EventSource)
    event: str
    data: str | None


def parse_sse(lines: Iterable[str]) -> Iterator[SseMessage]:
    """Server-Sent Events (WHATWG): fields up to a blank line; `:` lines are comments."""
    last_id: str | None = None
    event, data, seen = "message", [], False
    for line in lines:
        if line == "":
            if seen:
                yield SseMessage(id=last_id, event=event, data="\n".join(data) if data else None)
            event, data, seen = "message", [], False
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id" and "\0" not in value:
            last_id = value
        else:
            continue
        seen = True


def follow(client: http.Client, path: str, *, params: dict[str, Any] | None = None, last_id: str | None = None,
           read_timeout: float, probe_path: str | None = None,
           on_connect: Callable[[], None] = lambda: None,
           on_retry: Callable[[str, float], None] = lambda reason, delay: None,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[tuple[str, str]]:
    """(event, data) of each message of the stream at `path`, forever; resumes after a drop with Last-Event-ID.

    `last_id` is opaque: the stream's last `id:` (a position), or an id from the user.
    `read_timeout` should outlast a few of the server's keep-alive comments. `probe_path`,
    if given, is fetched with an ordinary request before each connection, so a refused
    token or a down server reads as it does for any other command.
    """
    delay = RECONNECT_FIRST
    connected = False
    while True:
        try:
            if probe_path is not None:
                client.request("GET", probe_path)
            headers = {"Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            with client.stream("GET", path, params=params, headers=headers, read_timeout=read_timeout) as response:
                if not connected:
                    on_connect()
                connected, delay = True, RECONNECT_FIRST
                for message in parse_sse(response.iter_lines()):
                    if message.id:
                        last_id = message.id
                    if message.data is not None:
                        yield message.event, message.data
            reason = "the server ended the stream"
        except http.ApiError as error:
            if not connected or (error.status < 500 and error.status != 429):
                raise
            reason = str(error)
        except http.ServerUnreachable as error:
            if not connected:
                raise
            reason = str(error)
        # Jitter: many clients dropped by one restart do not all come back at once.
        wait = delay * random.uniform(0.8, 1.2)
        on_retry(reason, wait)
        sleep(wait)
        delay = min(delay * 2, RECONNECT_MAX)
