"""Git's smart HTTP protocol, read-only, on top of dulwich's server-side upload-pack.

`git clone http://host/v1/skills/git` asks `GET info/refs?service=git-upload-pack`
(the advertisement) and then `POST git-upload-pack` (wants and haves in, a pack out),
each request on its own (stateless RPC). Protocol v0/v1 only: git's `Git-Protocol:
version=2` is ignored, and git falls back by itself. Both functions block; the
routes run them in a worker thread.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable
from pathlib import Path

from dulwich.protocol import CAPABILITY_FILTER, ReceivableProtocol
from dulwich.repo import Repo
from dulwich.server import Backend, UploadPackHandler

from alai.server.problems import ProblemError
from alai.server.skills import mirror

SERVICE = "git-upload-pack"
ADVERTISEMENT_TYPE = "application/x-git-upload-pack-advertisement"
REQUEST_TYPE = "application/x-git-upload-pack-request"
RESULT_TYPE = "application/x-git-upload-pack-result"
# Negotiation bodies are want/have lines (~50 bytes each): generous, but bounded.
REQUEST_MAX_BYTES = 64 * 1024 * 1024


class _OneRepository(Backend):
    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    def open_repository(self, path: str) -> Repo:  # type: ignore[override]
        return self.repo


class _UploadPack(UploadPackHandler):
    """dulwich's upload-pack without `filter`: a partial clone fetches missing blobs
    later by id, which needs allow-reachable-sha1-in-want, which dulwich does not
    serve. Without the capability git makes a full clone instead of a broken one."""

    def capabilities(self) -> list[bytes]:
        return [capability for capability in super().capabilities() if capability != CAPABILITY_FILTER]

    def set_client_capabilities(self, caps) -> None:
        # git (2.39) still says `filter` after warning that it will not filter.
        super().set_client_capabilities([cap for cap in caps if not cap.startswith(CAPABILITY_FILTER)])


def _open(path: Path) -> Repo:
    repo = mirror.open_repo(path)
    if not any(name.startswith(mirror.MIRRORED_PREFIXES) for name in repo.refs.allkeys()):
        repo.close()
        raise mirror.MirrorEmpty("the mirrored repository has no branches yet")
    return repo


def advertisement(path: Path) -> bytes:
    """The body of `GET info/refs?service=git-upload-pack`."""
    out = io.BytesIO()
    with _open(path) as repo:
        proto = ReceivableProtocol(io.BytesIO().read, out.write)
        proto.write_pkt_line(f"# service={SERVICE}\n".encode())
        proto.write_pkt_line(None)
        _UploadPack(_OneRepository(repo), ["/"], proto, stateless_rpc=True, advertise_refs=True).handle()
    return out.getvalue()


def decode_body(body: bytes, encoding: str | None) -> bytes:
    """The request body, gunzipped when git compressed it (large negotiations)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise ProblemError(415, f"Content-Encoding {encoding!r} is not supported (gzip is)", slug="bad-encoding")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, REQUEST_MAX_BYTES)
    except zlib.error as error:
        raise ProblemError(400, f"the gzip request body cannot be read: {error}", slug="bad-request-body") from None
    if inflater.unconsumed_tail:
        raise ProblemError(413, f"the request body is larger than {REQUEST_MAX_BYTES // 2**20} MiB uncompressed")
    return data


def upload_pack(path: Path, body: bytes, encoding: str | None, write: Callable[[bytes], None]) -> None:
    """Answers one `POST git-upload-pack`: reads the client's wants/haves from `body`,
    writes the result (acks, then the pack over side-band) to `write`."""
    request = decode_body(body, encoding)

    def send(data: bytes) -> int:
        write(data)
        return len(data)

    with _open(path) as repo:
        proto = ReceivableProtocol(io.BytesIO(request).read, send)
        _UploadPack(_OneRepository(repo), ["/"], proto, stateless_rpc=True).handle()
