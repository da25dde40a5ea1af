"""The gateway's upstream client (gateway/upstream.py) against raw HTTP servers on loopback:
line splitting across chunks, the one retry of a request whose pooled connection the
backend had closed, and failures raised as the httpx errors the failover code handles."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import orjson
import pytest

from alai.server.gateway.upstream import Upstream


@contextlib.asynccontextmanager
async def raw_server(handler):
    """A loopback server whose `handler(reader, writer, connection_number)` speaks HTTP itself."""
    connections, tasks = [], []

    async def accept(reader, writer):
        connections.append(writer)
        tasks.append(asyncio.current_task())
        try:
            await handler(reader, writer, len(connections))
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_request(reader) -> bytes | None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return await reader.readexactly(length)


def answer(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


@pytest.fixture
async def upstream():
    client = Upstream()
    await client.start()
    yield client
    await client.stop()


async def post(upstream: Upstream, url: str, *, read_timeout: float = 5.0):
    return await upstream.post(url + "/api/chat", b'{"model": "m"}', {"Content-Type": "application/json"},
                               connect_timeout=2.0, read_timeout=read_timeout)


async def test_lines_are_split_as_httpx_splits_them_across_chunks(upstream):
    chunks = [b"first\r", b"\nsecond\rthird\n", b"caf\xc3", b"\xa9\n", b"\n", b"lo", b"ng\r\n", b"last\r"]

    async def handler(reader, writer, _):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n")
        for chunk in chunks:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)  # separate reads on the client's side
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with raw_server(handler) as (url, _):
        response = await post(upstream, url)
        lines = [line async for line in response.aiter_lines()]
        await response.aclose()
    assert lines == ["first", "second", "third", "café", "", "long", "last"]  # as httpx splits them


async def test_a_pooled_connection_the_backend_closed_is_retried_on_a_new_one(upstream):
    # The race of an idle keep-alive connection: the backend closes it just as the next
    # request goes out on it. That request must not fail (nor mark the backend down).
    async def handler(reader, writer, number):
        await read_request(reader)
        writer.write(answer(b'{"n": %d}' % number))
        await writer.drain()
        if number == 1:
            await read_request(reader)  # the second request arrives on the pooled connection …
            return  # … and the connection is closed without an answer

        while True:  # later connections answer every request
            with contextlib.suppress(asyncio.IncompleteReadError):
                await read_request(reader)
                writer.write(answer(b'{"n": %d}' % number))
                await writer.drain()
                continue
            return

    async with raw_server(handler) as (url, connections):
        first = await post(upstream, url)
        assert await first.aread() == b'{"n": 1}'
        await first.aclose()
        second = await post(upstream, url)
        assert second.status_code == 200
        assert await second.aread() == b'{"n": 2}'
        await second.aclose()
        assert len(connections) == 2


async def test_a_request_lost_on_a_new_connection_is_not_sent_again(upstream):
    # The backend may have taken it (and be generating, or billing): only a request on a
    # reused connection is sent again.
    async def handler(reader, writer, _):
        await read_request(reader)  # and close without an answer

    async with raw_server(handler) as (url, connections):
        with pytest.raises(httpx.RemoteProtocolError):
            await post(upstream, url)
        assert len(connections) == 1


async def test_a_refused_connection_is_a_connect_error(upstream):
    async with raw_server(lambda *_: asyncio.sleep(0)) as (url, _):
        pass  # closed: nothing listens on the port any more
    with pytest.raises(httpx.ConnectError):
        await post(upstream, url)


async def test_a_backend_that_stops_answering_is_a_read_timeout(upstream):
    async def handler(reader, writer, _):
        await read_request(reader)
        await asyncio.sleep(3)

    async with raw_server(handler) as (url, _):
        with pytest.raises(httpx.ReadTimeout):
            await post(upstream, url, read_timeout=0.3)


async def test_content_must_be_read_before_it_is_used(upstream):
    async def handler(reader, writer, _):
        await read_request(reader)
        writer.write(answer(b'{"ok": true}'))
        await writer.drain()

    async with raw_server(handler) as (url, _):
        response = await post(upstream, url)
        with pytest.raises(RuntimeError, match="aread"):
            _ = response.content
        await response.aread()
        assert orjson.loads(response.content) == {"ok": True}
        assert response.headers["content-type"] == "application/json"
        await response.aclose()


def test_proxies_come_from_the_environment_as_in_httpx(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1,.internal")
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    client = Upstream()
    assert client.proxy_for("https://api.together.xyz/v1/chat/completions") == "http://proxy.example:3128"
    assert client.proxy_for("http://127.0.0.1:11434/api/chat") is None  # NO_PROXY
    assert client.proxy_for("https://anvil.internal/api/chat") is None  # NO_PROXY suffix
    assert client.proxy_for("http://forge:11434/api/chat") is None  # no HTTP_PROXY
