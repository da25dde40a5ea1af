"""The on-disk mirror of the skills repository: a bare git repository per replica,
fetched with dulwich (never the git binary), all branches and tags, pruned like
`git fetch --prune`, HEAD following the upstream's default branch.

Everything here blocks (network, disk): the service calls it from a worker thread.
Credentials never leave this module in clear: `Upstream.redact` is what logs, errors
and the status show.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from dulwich.client import GitClient, HttpGitClient, LocalGitClient
from dulwich.config import ConfigDict
from dulwich.errors import NotGitRepository
from dulwich.objects import Commit, Tag
from dulwich.repo import Repo

MIRRORED_PREFIXES = (b"refs/heads/", b"refs/tags/")
STATE_FILE = "alai-mirror.json"
HTTP_TIMEOUT_SECONDS = 60.0
# GitHub's convention for a token given as a password; GitLab and Gitea accept any name.
DEFAULT_TOKEN_USERNAME = "x-access-token"


class MirrorEmpty(Exception):
    """The mirror has nothing to serve yet (never fetched, or the upstream is empty)."""


class UnsupportedRepo(ValueError):
    pass


@dataclass(frozen=True)
class Upstream:
    """The configured repository: an http(s) URL or a local path / file:// URL."""

    url: str

    @property
    def is_http(self) -> bool:
        return urlsplit(self.url).scheme in ("http", "https")

    @property
    def location(self) -> str:
        """The URL without credentials, or the absolute local path: what names the mirror."""
        parts = urlsplit(self.url)
        if parts.scheme in ("http", "https"):
            return urlunsplit((parts.scheme, _host_port(parts), parts.path, parts.query, ""))
        if parts.scheme == "file":
            return str(Path(unquote(parts.path)).resolve())
        if parts.scheme and len(parts.scheme) > 1:  # "c:" is a Windows drive, not a scheme
            raise UnsupportedRepo(f"ALAI_SKILLS_REPO: {parts.scheme}:// is not supported; use an https URL "
                                  "(with ALAI_SKILLS_TOKEN) or a local path")
        if re.match(r"^[\w.-]+@[\w.-]+:", self.url):
            raise UnsupportedRepo("ALAI_SKILLS_REPO: ssh addresses are not supported; use an https URL "
                                  "(with ALAI_SKILLS_TOKEN) or a local path")
        return str(Path(self.url).expanduser().resolve())

    def redact(self) -> str:
        """The URL as people may see it: no user info, no query string."""
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https"):
            return self.url
        netloc = ("***@" if parts.username or parts.password else "") + _host_port(parts)
        return urlunsplit((parts.scheme, netloc, parts.path, "***" if parts.query else "", ""))

    def secrets(self, token: str | None) -> list[str]:
        """Every credential that could appear in an error message."""
        parts = urlsplit(self.url)
        found = [token, parts.password, parts.username, unquote(parts.password or ""), unquote(parts.username or ""),
                 parts.query]
        if token and token.lower().startswith("bearer "):
            found.append(token[7:])
        return sorted({value for value in found if value and len(value) >= 3}, key=len, reverse=True)

    def scrub(self, text: str, token: str | None) -> str:
        """`text` with the URL redacted and every credential replaced by ***."""
        text = text.replace(self.url, self.redact())
        for secret in self.secrets(token):
            text = text.replace(secret, "***")
        return text

    def client(self, token: str | None) -> tuple[GitClient, str]:
        """A dulwich client and the path to fetch. A token is sent as the password of
        HTTP basic auth (user: the URL's, else x-access-token), or as is when it reads
        `Bearer …`; it is only ever sent to the configured URL's origin."""
        if not self.is_http:
            return LocalGitClient(), self.location
        parts = urlsplit(self.url)
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        config = ConfigDict()
        if token:
            if token.lower().startswith("bearer "):
                # (dulwich 1.2 ignores the client's extra_headers; http.extraHeader is read)
                config.set((b"http",), b"extraHeader", f"Authorization: {token}".encode())
            else:
                username, password = username or DEFAULT_TOKEN_USERNAME, token
        client = HttpGitClient(self.location, username=username, password=password, config=config,
                               timeout=HTTP_TIMEOUT_SECONDS)
        return client, ""


def _host_port(parts: Any) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port}" if parts.port else host


@dataclass(frozen=True)
class Summary:
    head_ref: str | None
    head_commit: str | None
    refs: int


@dataclass(frozen=True)
class FetchResult:
    before: Summary
    after: Summary
    changed_refs: int


def mirror_path(root: Path, upstream: Upstream) -> Path:
    """One bare repository per upstream, so that pointing ALAI_SKILLS_REPO elsewhere
    never mixes two histories."""
    digest = hashlib.sha256(upstream.location.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(urlsplit(upstream.location).path).name.removesuffix(".git"))[:40]
    return root / f"{name or 'repo'}-{digest}.git"


def open_repo(path: Path) -> Repo:
    """The mirror for reading; MirrorEmpty if it was never created."""
    if not (path / "objects").is_dir():
        raise MirrorEmpty("nothing has been mirrored yet")
    return Repo(str(path))


def _ensure(path: Path) -> Repo:
    if (path / "objects").is_dir():
        return Repo(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    return Repo.init_bare(str(path), mkdir=not path.exists())


def peel_to_commit(repo: Repo, sha: bytes) -> Commit | None:
    obj = repo.object_store[sha]
    while isinstance(obj, Tag):
        obj = repo.object_store[obj.object[1]]
    return obj if isinstance(obj, Commit) else None


def summarize(repo: Repo) -> Summary:
    refs = sum(1 for name in repo.refs.allkeys() if name.startswith(MIRRORED_PREFIXES))
    head_ref = repo.refs.get_symrefs().get(b"HEAD")
    try:
        commit = peel_to_commit(repo, repo.refs[b"HEAD"])
    except KeyError:
        commit = None
    return Summary(head_ref=head_ref.decode() if head_ref else None,
                   head_commit=commit.id.decode() if commit is not None else None, refs=refs)


def fetch(path: Path, upstream: Upstream, token: str | None) -> FetchResult:
    """Fetches every branch and tag into the mirror at `path`; refs gone upstream are
    removed, HEAD follows the upstream's. Objects arrive before any ref moves, so a
    reader never sees a ref it cannot resolve."""
    client, remote_path = upstream.client(token)
    with _ensure(path) as repo:
        before = summarize(repo)

        def wants(refs: Any, depth: int | None = None) -> list[bytes]:
            return sorted({sha for name, sha in refs.items()
                           if sha is not None and _mirrored(name) and sha not in repo.object_store})

        try:
            result = client.fetch(remote_path, repo, determine_wants=wants,
                                  ref_prefix=[b"HEAD", *MIRRORED_PREFIXES])
        except NotGitRepository:
            raise NotGitRepository(f"no git repository at {upstream.redact()}") from None
        finally:
            client.close()
        remote = {name: sha for name, sha in result.refs.items()
                  if sha is not None and _mirrored(name) and sha in repo.object_store}
        changed = 0
        for name, sha in remote.items():
            if repo.refs.read_ref(name) != sha:
                repo.refs[name] = sha
                changed += 1
        for name in list(repo.refs.allkeys()):
            if name.startswith(MIRRORED_PREFIXES) and name not in remote:
                del repo.refs[name]
                changed += 1
        head = result.symrefs.get(b"HEAD")
        if head is None or head not in remote:
            head = next((candidate for candidate in (b"refs/heads/main", b"refs/heads/master") if candidate in remote),
                        None) or next((name for name in sorted(remote) if name.startswith(b"refs/heads/")), None)
        if head is not None and repo.refs.get_symrefs().get(b"HEAD") != head:
            repo.refs.set_symbolic_ref(b"HEAD", head)
        return FetchResult(before=before, after=summarize(repo), changed_refs=changed)


def _mirrored(name: bytes) -> bool:
    return name.startswith(MIRRORED_PREFIXES) and not name.endswith(b"^{}")


# -- what survives a restart: when the mirror was last fetched, and how that went ----------

def read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, Any] = {"error": data.get("error")}
    for key in ("last_fetch_at", "last_success_at"):
        try:
            out[key] = datetime.fromisoformat(data[key]) if data.get(key) else None
        except (TypeError, ValueError):
            out[key] = None
    return out


def write_state(path: Path, *, last_fetch_at: datetime | None, last_success_at: datetime | None,
                error: str | None) -> None:
    if not path.is_dir():
        return
    data = {"last_fetch_at": last_fetch_at.isoformat() if last_fetch_at else None,
            "last_success_at": last_success_at.isoformat() if last_success_at else None, "error": error}
    temporary = path / f".{STATE_FILE}.{os.getpid()}"
    temporary.write_text(json.dumps(data))
    os.replace(temporary, path / STATE_FILE)
