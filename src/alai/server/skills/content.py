"""Reading the mirror: refs, trees, files and archives, straight from the git objects.

Every function blocks (the object store is on disk) and takes an open Repo; the
service runs them in a worker thread. Private paths (privacy.PrivatePaths) are
answered as absent, so that a caller without `skills:private` cannot even learn
their names.
"""

from __future__ import annotations

import io
import mimetypes
import re
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dulwich.objects import Blob, Commit, Tag, Tree
from dulwich.refs import check_ref_format
from dulwich.repo import Repo

from alai.server.problems import ProblemError
from alai.server.skills import mirror
from alai.server.skills.privacy import PrivatePaths
from alai.wire.skills import SkillRef, SkillRefs, SkillTree, TreeEntry

_HEX = re.compile(r"^[0-9a-f]{40}$")
_SIZE_CACHE_MAX = 200_000
_sizes: dict[bytes, int] = {}  # blob id → size; blobs never change
TEXT_TYPES = {"application/json", "application/xml", "application/javascript", "application/x-sh",
              "application/yaml", "application/toml"}
EXTRA_TYPES = {".md": "text/markdown", ".markdown": "text/markdown", ".yaml": "application/yaml",
               ".yml": "application/yaml", ".toml": "application/toml", ".mdc": "text/markdown",
               ".txt": "text/plain", ".py": "text/x-python", ".sh": "application/x-sh"}


@dataclass(frozen=True)
class Resolved:
    ref: str  # refs/heads/main, refs/tags/v1, or the commit id asked for
    commit: Commit


@dataclass(frozen=True)
class Item:
    path: str  # from the root
    mode: int
    sha: bytes

    @property
    def is_tree(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_submodule(self) -> bool:
        return stat.S_IFMT(self.mode) == 0o160000


def _not_found(detail: str, slug: str = "not-found") -> ProblemError:
    return ProblemError(404, detail, slug=slug)


def resolve(repo: Repo, ref: str | None) -> Resolved:
    """The commit `ref` names: a branch, a tag, refs/…, or a full commit id; default HEAD."""
    if ref is None or ref == "HEAD":
        head = repo.refs.get_symrefs().get(b"HEAD")
        try:
            commit = mirror.peel_to_commit(repo, repo.refs[b"HEAD"])
        except KeyError:
            commit = None
        if commit is None:
            raise mirror.MirrorEmpty("the mirrored repository has no default branch yet")
        return Resolved(ref=head.decode() if head else commit.id.decode(), commit=commit)
    if _HEX.match(ref):
        candidates: list[bytes] = []
    else:
        full = ref if ref.startswith("refs/") else f"refs/heads/{ref}"
        if len(ref) > 250 or not check_ref_format(full.encode()):
            raise ProblemError(422, f"{ref!r} is not a valid ref name (a branch, a tag, refs/… or a commit id)",
                               slug="bad-ref")
        candidates = [ref.encode()] if ref.startswith("refs/") else [f"refs/heads/{ref}".encode(),
                                                                     f"refs/tags/{ref}".encode()]
    for candidate in candidates:
        if candidate.startswith(mirror.MIRRORED_PREFIXES) and candidate in repo.refs:
            commit = mirror.peel_to_commit(repo, repo.refs[candidate])
            if commit is not None:
                return Resolved(ref=candidate.decode(), commit=commit)
    if _HEX.match(ref) and ref.encode() in repo.object_store:
        commit = mirror.peel_to_commit(repo, ref.encode())
        if commit is not None:
            return Resolved(ref=ref, commit=commit)
    raise _not_found(f"no branch, tag or commit {ref!r} in the skills repository; GET /v1/skills/refs lists them",
                     "unknown-ref")


def clean_path(path: str) -> str:
    """`path` without surrounding slashes; 422 for `.`/`..` or empty segments."""
    cleaned = path.strip("/")
    if cleaned and any(part in ("", ".", "..") for part in cleaned.split("/")):
        raise ProblemError(422, f"{path!r} is not a path in the repository (no '.', '..' or '//')", slug="bad-path")
    return cleaned


def lookup(repo: Repo, resolved: Resolved, path: str, hidden: PrivatePaths) -> Item:
    """The tree entry at `path` (the root tree for ""); 404 if absent or private."""
    item = Item(path="", mode=stat.S_IFDIR, sha=resolved.commit.tree)
    for part in path.split("/") if path else []:
        current = repo.object_store[item.sha]
        if not isinstance(current, Tree):
            break
        child = f"{item.path}/{part}" if item.path else part
        try:
            mode, sha = current[part.encode()]
        except KeyError:
            break
        item = Item(path=child, mode=mode, sha=sha)
    if item.path != path or (path and not visible(repo, item, hidden)):
        raise _not_found(f"{path!r} is not in the skills repository at {resolved.ref}")
    return item


def _entries(repo: Repo, tree: Item) -> Iterator[Item]:
    obj = repo.object_store[tree.sha]
    assert isinstance(obj, Tree)
    for entry in obj.iteritems():
        name = entry.path.decode(errors="surrogateescape")
        yield Item(path=f"{tree.path}/{name}" if tree.path else name, mode=entry.mode, sha=entry.sha)


def visible(repo: Repo, item: Item, hidden: PrivatePaths) -> bool:
    """Not private, and not a folder that holds only private things (`*/secrets/*`
    hides the `secrets` folders too, not just what they hold)."""
    if not hidden:
        return True
    if hidden.matches(item.path):
        return False
    if not item.is_tree:
        return True
    return any(visible(repo, child, hidden) for child in _entries(repo, item))


def _children(repo: Repo, tree: Item, hidden: PrivatePaths) -> Iterator[Item]:
    for item in _entries(repo, tree):
        if visible(repo, item, hidden):
            yield item


def walk(repo: Repo, top: Item, hidden: PrivatePaths) -> Iterator[Item]:
    """Everything below `top`, depth first, folders before what they hold."""
    for item in _children(repo, top, hidden):
        yield item
        if item.is_tree:
            yield from walk(repo, item, hidden)


def blob_size(repo: Repo, sha: bytes) -> int:
    size = _sizes.get(sha)
    if size is None:
        _, raw = repo.object_store.get_raw(sha)
        size = len(raw)
        if len(_sizes) >= _SIZE_CACHE_MAX:
            _sizes.clear()
        _sizes[sha] = size
    return size


def _entry(repo: Repo, item: Item) -> TreeEntry:
    kind = "tree" if item.is_tree else "commit" if item.is_submodule else "blob"
    return TreeEntry(path=item.path, name=item.path.rsplit("/", 1)[-1], type=kind, mode=f"{item.mode:06o}",
                     id=item.sha.decode(), size=blob_size(repo, item.sha) if kind == "blob" else None)


def tree(repo: Repo, resolved: Resolved, path: str, *, recursive: bool, hidden: PrivatePaths) -> SkillTree:
    top = lookup(repo, resolved, path, hidden)
    if not top.is_tree:
        raise _not_found(f"{path!r} is a file, not a folder; read it at /v1/skills/files/{path}", "not-a-folder")
    items = walk(repo, top, hidden) if recursive else _children(repo, top, hidden)
    return SkillTree(ref=resolved.ref, commit=resolved.commit.id.decode(), path=path, id=top.sha.decode(),
                     entries=[_entry(repo, item) for item in items])


def file(repo: Repo, resolved: Resolved, path: str, hidden: PrivatePaths) -> tuple[bytes, str]:
    """(content, blob id) of the file at `path`."""
    if not path:
        raise _not_found("name a file: /v1/skills/files/{path}", "not-a-file")
    item = lookup(repo, resolved, path, hidden)
    if item.is_tree or item.is_submodule:
        raise _not_found(f"{path!r} is a folder, not a file; list it at /v1/skills/tree/{path}", "not-a-file")
    obj = repo.object_store[item.sha]
    assert isinstance(obj, Blob)
    return obj.as_raw_string(), item.sha.decode()


def content_type(path: str, content: bytes) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    suffix = name[name.rfind("."):] if "." in name else ""
    guessed = EXTRA_TYPES.get(suffix) or mimetypes.guess_type(name, strict=False)[0]
    if guessed is None:
        try:
            content.decode("utf-8")
        except UnicodeDecodeError:
            return "application/octet-stream"
        guessed = "application/octet-stream" if b"\0" in content else "text/plain"
    if guessed.startswith("text/") or guessed in TEXT_TYPES:
        return f"{guessed}; charset=utf-8"
    return guessed


def refs(repo: Repo) -> SkillRefs:
    summary = mirror.summarize(repo)
    branches, tags = [], []
    for name in sorted(repo.refs.allkeys()):
        if not name.startswith(mirror.MIRRORED_PREFIXES):
            continue
        sha = repo.refs[name]
        obj = repo.object_store[sha]
        commit = mirror.peel_to_commit(repo, sha)
        if commit is None:
            continue
        short = name.decode().split("/", 2)[2]
        entry = SkillRef(name=short, ref=name.decode(), commit=commit.id.decode(),
                         tag=sha.decode() if isinstance(obj, Tag) else None)
        (branches if name.startswith(b"refs/heads/") else tags).append(entry)
    return SkillRefs(head_ref=summary.head_ref, head_commit=summary.head_commit, branches=branches, tags=tags)


# -- archives ----------------------------------------------------------------------------

class _Sink(io.RawIOBase):
    """A write-only, unseekable file that hands what it gets to `write`."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        super().__init__()
        self._write = write

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self._write(bytes(data))
        return len(data)


def archive_top(repo: Repo, resolved: Resolved, path: str, hidden: PrivatePaths) -> Item:
    top = lookup(repo, resolved, path, hidden)
    if not top.is_tree:
        raise _not_found(f"{path!r} is a file; read it at /v1/skills/files/{path}", "not-a-folder")
    return top


def write_archive(repo: Repo, resolved: Resolved, top: Item, fmt: str, hidden: PrivatePaths,
                  write: Callable[[bytes], None]) -> None:
    """Writes the archive of `top` (names relative to it) to `write`, as it goes."""
    when = resolved.commit.commit_time
    prefix = len(top.path) + 1 if top.path else 0
    sink = _Sink(write)
    if fmt == "zip":
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            stamp = time.gmtime(max(when, 315532800))[:6]  # zip dates start in 1980
            for item in walk(repo, top, hidden):
                name = item.path[prefix:]
                if item.is_submodule:
                    continue
                if item.is_tree:
                    info = zipfile.ZipInfo(name + "/", date_time=stamp)
                    info.external_attr = (0o40755 << 16) | 0x10
                    info.create_system = 3
                    archive.writestr(info, b"")
                    continue
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.create_system = 3
                info.external_attr = _file_mode(item.mode) << 16
                info.compress_type = zipfile.ZIP_STORED if stat.S_ISLNK(item.mode) else zipfile.ZIP_DEFLATED
                archive.writestr(info, _blob(repo, item.sha))
        return
    with tarfile.open(fileobj=sink, mode="w|gz", format=tarfile.PAX_FORMAT) as archive:
        for item in walk(repo, top, hidden):
            if item.is_submodule:
                continue
            info = tarfile.TarInfo(item.path[prefix:])
            info.mtime = when
            if item.is_tree:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            elif stat.S_ISLNK(item.mode):
                info.type, info.mode = tarfile.SYMTYPE, 0o777
                info.linkname = _blob(repo, item.sha).decode(errors="surrogateescape")
                archive.addfile(info)
            else:
                data = _blob(repo, item.sha)
                info.size, info.mode = len(data), _file_mode(item.mode) & 0o777
                archive.addfile(info, io.BytesIO(data))


def _file_mode(mode: int) -> int:
    if stat.S_ISLNK(mode):
        return 0o120777
    return 0o100755 if mode & 0o100 else 0o100644


def _blob(repo: Repo, sha: bytes) -> bytes:
    obj = repo.object_store[sha]
    assert isinstance(obj, Blob)
    return obj.as_raw_string()
