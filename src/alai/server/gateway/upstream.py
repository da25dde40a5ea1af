"""The gateway's client for model requests (chat, generate, embeddings …).

aiohttp, not httpx: a bare proxy forwarding with httpx (pure-Python pool and h11)
adds 2.5 ms per request on two cores, with aiohttp (C parser) 0.8–0.9 ms
(docs/performance.md, "Model gateway overhead"). Health checks and the rare
`/api/version` and `/api/ps` look-ups stay on httpx.

`UpstreamResponse` offers the part of `httpx.Response` the surfaces use, and every
failure is raised as one of httpx's exceptions (ConnectError, ConnectTimeout,
ReadTimeout, ReadError, RemoteProtocolError), so failover and the error lines in
streams handle one family of errors whichever client made the call.

A keep-alive connection the backend closed while it lay idle in the pool fails the
next request before any of it is answered; such a request — on a reused connection,
with no answer yet — is sent once more instead of marking a healthy backend down. A
request that fails on a new connection is not sent again: the backend may have it.

Proxies from the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) and the
certificate store (certifi) apply as in httpx, so health checks and model requests
reach a backend the same way. The proxy is worked out once per origin: aiohttp's own
`trust_env` does it (and reads ~/.netrc) on every request, ~2 ms each on two cores.
"""

from __future__ import annotations

import codecs
import urllib.request
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import aiohttp
import httpx

MAX_CONNECTIONS = 512
# Fewer seconds than servers commonly keep an idle connection (uvicorn 5, Go's net/http
# and so Ollama longer), so that the pool seldom holds one the other side is closing.
KEEPALIVE_SECONDS = 4.0
# Failures that mean "the connection went away before an answer": on a reused
# connection, the request is sent again once. (ClientConnectorError, a failed connect,
# is a ClientOSError too, but it never happens on a reused connection.)
STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


async def _on_reuse(_session, context, _params) -> None:
    context.trace_request_ctx["reused"] = True


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
        """The body's lines without their endings: \\n, \\r\\n and \\r end a line, as in httpx
        (not the other Unicode line breaks httpx also splits on: NDJSON and SSE have none)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending: list[str] = []  # the start of a line not ended yet
        after_cr = False  # the last chunk ended with \r: a \n first in the next one ends nothing
        async for chunk in self.aiter_bytes():
            text = decoder.decode(chunk)
            if after_cr and text.startswith("\n"):
                text = text[1:]
            if not text:
                continue
            after_cr = text.endswith("\r")
            lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            if len(lines) == 1:
                pending.append(lines[0])
                continue
            yield "".join(pending) + lines[0]
            for line in lines[1:-1]:
                yield line
            pending = [lines[-1]] if lines[-1] else []
        tail = "".join(pending) + decoder.decode(b"", final=True)
        if tail:
            yield tail

    async def aclose(self) -> None:
        # A body read to its end gives the connection back to the pool; one left
        # half-read (the client went away) closes it.
        self._raw.release()


class Upstream:
    """One aiohttp session for the process (created inside the running loop: `start`)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], str | None] = {}  # (scheme, host:port) -> proxy URL

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=KEEPALIVE_SECONDS,
                                         ssl=httpx.create_ssl_context())
        reuse = aiohttp.TraceConfig()
        reuse.on_connection_reuseconn.append(_on_reuse)
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False, raise_for_status=False,
                                              skip_auto_headers=("User-Agent",), trace_configs=[reuse])

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def proxy_for(self, url: str) -> str | None:
        """The proxy the environment names for `url`'s origin, if any (NO_PROXY honoured)."""
        parts = urlsplit(url)
        origin = (parts.scheme, parts.netloc)
        if origin not in self._proxies:
            proxies = urllib.request.getproxies()
            bypass = urllib.request.proxy_bypass(parts.hostname or "") if proxies else True
            self._proxies[origin] = None if bypass else proxies.get(parts.scheme) or proxies.get("all")
        return self._proxies[origin]

    async def post(self, url: str, content: bytes, headers: dict[str, str], *, connect_timeout: float,
                   read_timeout: float) -> UpstreamResponse:
        """POSTs `content`; returns once the answer's status and headers are in."""
        if self._session is None:
            raise RuntimeError("Upstream.start() was not called")
        # sock_connect: the TCP (and TLS) connect, as httpx's connect timeout; connect, which
        # in aiohttp also covers waiting for a free pooled connection, gets as long as a
        # read (httpx's pool timeout was its read timeout too): a busy pool is not a dead backend.
        timeout = aiohttp.ClientTimeout(total=None, connect=read_timeout, sock_connect=connect_timeout,
                                        sock_read=read_timeout)
        for attempt in (1, 2):
            trace = {"reused": False}
            try:
                raw = await self._session.post(url, data=content, headers=headers, timeout=timeout,
                                               allow_redirects=False, trace_request_ctx=trace,
                                               proxy=self.proxy_for(url))
            except STALE_CONNECTION as error:
                if attempt == 1 and trace["reused"]:
                    continue  # an idle connection the backend had closed: once more, on another
                raise translate_error(error) from error
            except (TimeoutError, aiohttp.ClientError) as error:
                raise translate_error(error) from error
            return UpstreamResponse(raw)
        raise AssertionError("unreachable")
