"""The gateway's client for model requests (chat, generate, embeddings …).

aiohttp, not httpx: on the gateway's hot path httpx's pure-Python pool and h11 cost
about 1.7 ms per proxied request on two cores, aiohttp's C parser 0.2 ms
(docs/performance.md, "Model gateway overhead"). Health checks and the rare
`/api/version` and `/api/ps` look-ups stay on httpx.

`UpstreamResponse` offers the part of `httpx.Response` the surfaces use, and every
failure is raised as one of httpx's exceptions (ConnectError, ConnectTimeout,
ReadTimeout, ReadError, RemoteProtocolError), so failover and the error lines in
streams handle one family of errors whichever client made the call.

A keep-alive connection the backend closed while it lay idle in the pool fails the
next request before any of it is answered; that request is sent once more on a new
connection instead of marking a healthy backend down.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Mapping

import aiohttp
import httpx

MAX_CONNECTIONS = 512
# Fewer seconds than servers commonly keep an idle connection (uvicorn 5, Go's net/http
# and so Ollama longer), so that the pool seldom holds one the other side is closing.
KEEPALIVE_SECONDS = 4.0
# Failures that mean "the connection went away before an answer": on a reused
# connection, the request is sent again once.
STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


def translate_error(error: BaseException) -> httpx.HTTPError:
    """An aiohttp (or asyncio) failure as the httpx exception that means the same."""
    message = str(error) or type(error).__name__
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(error, aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(error, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message)
    return httpx.ReadError(message)


class UpstreamResponse:
    """An upstream answer, its body not read yet (`aread`, `aiter_bytes` or `aiter_lines`)."""

    def __init__(self, raw: aiohttp.ClientResponse) -> None:
        self._raw = raw
        self.status_code: int = raw.status
        self.headers: Mapping[str, str] = raw.headers  # case-insensitive, as httpx's
        self._content: bytes | None = None

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the upstream answer has not been read (await aread() first)")
        return self._content

    def json(self):
        import orjson

        return orjson.loads(self.content)

    async def aread(self) -> bytes:
        if self._content is None:
            try:
                self._content = await self._raw.read()
            except (TimeoutError, aiohttp.ClientError) as error:
                raise translate_error(error) from error
        return self._content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        if self._content is not None:
            if self._content:
                yield self._content
            return
        try:
            async for chunk in self._raw.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as error:
            raise translate_error(error) from error

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body's lines without their endings, as httpx gives them (\\n, \\r\\n or \\r)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        async for chunk in self.aiter_bytes():
            text = pending + decoder.decode(chunk)
            # A \r at the end may be the first half of \r\n: keep it for the next chunk.
            held = text.endswith("\r")
            lines = (text[:-1] if held else text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
            pending = lines.pop() + ("\r" if held else "")
            for line in lines:
                yield line
        tail = pending + decoder.decode(b"", final=True)
        for line in tail.replace("\r\n", "\n").replace("\r", "\n").split("\n") if tail else ():
            yield line

    async def aclose(self) -> None:
        # A body read to its end gives the connection back to the pool; one left
        # half-read (the client went away) closes it.
        self._raw.release()


class Upstream:
    """One aiohttp session for the process (created inside the running loop: `start`)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=0,
                                         keepalive_timeout=KEEPALIVE_SECONDS, enable_cleanup_closed=False)
        # trust_env off: a proxy from the environment must not sit between us and ANVIL.
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False, raise_for_status=False,
                                              skip_auto_headers=("User-Agent",))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, content: bytes, headers: dict[str, str], *, connect_timeout: float,
                   read_timeout: float) -> UpstreamResponse:
        """POSTs `content`; returns once the answer's status and headers are in."""
        if self._session is None:
            raise RuntimeError("Upstream.start() was not called")
        timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        for attempt in (1, 2):
            try:
                raw = await self._session.post(url, data=content, headers=headers, timeout=timeout,
                                               allow_redirects=False)
            except STALE_CONNECTION as error:
                if attempt == 1 and not isinstance(error, aiohttp.ClientConnectorError):
                    continue  # most likely an idle connection the backend had closed: once more
                raise translate_error(error) from error
            except (TimeoutError, aiohttp.ClientError) as error:
                raise translate_error(error) from error
            return UpstreamResponse(raw)
        raise AssertionError("unreachable")
