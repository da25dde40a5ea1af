"""Skills over HTTP: status, refresh, webhook, refs, trees, files, archives and a
read-only git smart-HTTP endpoint (see alai/wire/skills.py for the surface)."""

from __future__ import annotations

import hashlib
from typing import Annotated

from dulwich.errors import GitProtocolError
from fastapi import Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from alai.server.deps import ADMIN_SCOPE, Principal, api_router, public, require_scope
from alai.server.problems import ProblemError
from alai.server.skills import content, mirror, service, smart_http
from alai.server.skills.privacy import NOTHING_PRIVATE
from alai.wire.skills import (
    PRIVATE_SCOPE,
    READ_SCOPE,
    ArchiveFormat,
    SkillRefs,
    SkillsStatus,
    SkillTree,
    WebhookAccepted,
)

READER = Depends(require_scope(READ_SCOPE))
RefQuery = Annotated[str | None, Query(max_length=256, description="branch, tag, refs/… or commit id; default HEAD")]
NO_CACHE = {"Cache-Control": "no-cache"}
GIT_NO_CACHE = {"Cache-Control": "no-cache, max-age=0, must-revalidate", "Pragma": "no-cache",
                "Expires": "Fri, 01 Jan 1980 00:00:00 GMT"}
WEBHOOK_MAX_BYTES = 25 * 1024 * 1024  # GitHub's own limit for a delivery
ARCHIVE_TYPES = {"tar.gz": "application/gzip", "zip": "application/zip"}


def _skills(request: Request) -> service.Skills:
    return request.app.state.skills


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match against our ETag (weak comparison, as RFC 9110 asks for GET)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(candidate.strip().removeprefix("W/") == ours for candidate in header.split(","))


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, f"the request body may hold at most {limit // 2**20} MiB")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError(413, f"the request body may hold at most {limit // 2**20} MiB")
        parts.append(chunk)
    return b"".join(parts)


def _is_git(request: Request) -> bool:
    return request.headers.get("user-agent", "").lower().startswith("git/")


def _for_git(request: Request, error: ProblemError) -> Response:
    """git prints a text/plain error body (`remote: …`) but not a JSON one."""
    if not _is_git(request):
        raise error
    return PlainTextResponse(error.detail + "\n", status_code=error.status, headers={**GIT_NO_CACHE, **error.headers})


def _clone_allowed(skills: service.Skills, principal: Principal) -> None:
    if skills.private and not principal.has_scope(PRIVATE_SCOPE):
        raise ProblemError(
            403, "this skills repository has private folders (ALAI_SKILLS_PRIVATE), and a clone would carry them: "
                 f"cloning needs the scope {PRIVATE_SCOPE!r}. Without it, download what you may read with "
                 "GET /v1/skills/archive (tar.gz or zip) or read files at /v1/skills/files/{path}",
            slug="clone-needs-private-scope", required_scope=PRIVATE_SCOPE)


def router_factory():
    router = api_router(prefix="/v1/skills", tags=["skills"])

    @router.get("/status", response_model=SkillsStatus, dependencies=[READER])
    async def status(request: Request) -> SkillsStatus:
        """What this replica's mirror holds, and how old it is (age_seconds, error)."""
        return _skills(request).status()

    @router.post("/refresh", response_model=SkillsStatus, dependencies=[Depends(require_scope(ADMIN_SCOPE))])
    async def refresh(request: Request) -> SkillsStatus:
        """Fetches now; answers the status after the fetch (its error, if it failed)."""
        skills = _skills(request)
        answer = await skills.fetch(reason="refresh")
        await skills.notify_others()
        return answer

    @router.post("/webhook", response_model=WebhookAccepted, status_code=202)
    @public
    async def webhook(request: Request) -> WebhookAccepted:
        """The git host's push hook, checked with the shared secret; schedules a fetch."""
        skills = _skills(request)
        body = await read_body(request, WEBHOOK_MAX_BYTES)
        skills.verify_webhook(request.headers, body)
        skills.schedule(reason="webhook")
        await skills.notify_others()
        return WebhookAccepted(detail="a fetch of the skills repository is scheduled")

    @router.get("/refs", response_model=SkillRefs, dependencies=[READER])
    async def refs(request: Request) -> SkillRefs:
        """Branches and tags, with the commits they point at."""
        return await _skills(request).read(content.refs)

    async def _tree(request: Request, path: str, ref: str | None, recursive: bool, principal: Principal) -> SkillTree:
        skills = _skills(request)
        hidden = skills.hidden_for(principal)
        cleaned = content.clean_path(path)
        return await skills.read(lambda repo: content.tree(repo, content.resolve(repo, ref), cleaned,
                                                           recursive=recursive, hidden=hidden))

    @router.get("/tree", response_model=SkillTree)
    async def tree_root(request: Request, ref: RefQuery = None, recursive: bool = False,
                        principal: Principal = READER) -> SkillTree:
        """The root folder's entries (everything below with recursive=true)."""
        return await _tree(request, "", ref, recursive, principal)

    @router.get("/tree/{path:path}", response_model=SkillTree)
    async def tree(path: str, request: Request, ref: RefQuery = None, recursive: bool = False,
                   principal: Principal = READER) -> SkillTree:
        """A folder's entries (everything below with recursive=true)."""
        return await _tree(request, path, ref, recursive, principal)

    @router.get("/files/{path:path}", response_class=Response)
    async def file(path: str, request: Request, ref: RefQuery = None, principal: Principal = READER) -> Response:
        """A file's bytes; ETag is its blob id, If-None-Match → 304."""
        skills = _skills(request)
        hidden = skills.hidden_for(principal)
        cleaned = content.clean_path(path)

        def work(repo):
            resolved = content.resolve(repo, ref)
            data, blob_id = content.file(repo, resolved, cleaned, hidden)
            return data, blob_id, resolved.commit.id.decode(), content.content_type(cleaned, data)

        data, blob_id, commit, media_type = await skills.read(work)
        headers = {"ETag": f'"{blob_id}"', "X-Alai-Commit": commit, **NO_CACHE}
        if etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=media_type, headers=headers)

    async def _archive(request: Request, path: str, ref: str | None, fmt: str, principal: Principal) -> Response:
        skills = _skills(request)
        hidden = skills.hidden_for(principal)
        cleaned = content.clean_path(path)

        def locate(repo):
            resolved = content.resolve(repo, ref)
            return resolved.ref, resolved.commit.id, content.archive_top(repo, resolved, cleaned, hidden)

        ref_name, commit_id, top = await skills.read(locate)
        visible = "all" if hidden is NOTHING_PRIVATE or not hidden else \
            hashlib.sha256(",".join(hidden.globs).encode()).hexdigest()[:8]
        name = "skills" + (f"-{cleaned.replace('/', '-')}" if cleaned else "") + f"-{commit_id.decode()[:12]}.{fmt}"
        headers = {"ETag": f'W/"{top.sha.decode()}-{fmt}-{visible}"', "X-Alai-Commit": commit_id.decode(),
                   "Content-Disposition": f'attachment; filename="{name}"', **NO_CACHE}
        if etag_matches(request.headers.get("if-none-match"), headers["ETag"]):
            return Response(status_code=304, headers=headers)

        def produce(mirror_path, write):
            with mirror.open_repo(mirror_path) as repo:
                resolved = content.Resolved(ref=ref_name, commit=repo[commit_id])
                content.write_archive(repo, resolved, top, fmt, hidden, write)

        body = await skills.stream(produce)
        return StreamingResponse(body, media_type=ARCHIVE_TYPES[fmt], headers=headers)

    @router.get("/archive", response_class=Response)
    async def archive_root(request: Request, ref: RefQuery = None, format: ArchiveFormat = "tar.gz",
                           principal: Principal = READER) -> Response:
        """The whole repository at `ref` as tar.gz or zip (without the caller's private paths)."""
        return await _archive(request, "", ref, format, principal)

    @router.get("/archive/{path:path}", response_class=Response)
    async def archive(path: str, request: Request, ref: RefQuery = None, format: ArchiveFormat = "tar.gz",
                      principal: Principal = READER) -> Response:
        """A folder at `ref` as tar.gz or zip, names relative to it."""
        return await _archive(request, path, ref, format, principal)

    # -- git smart HTTP (read-only) ------------------------------------------------------

    @router.get("/git/info/refs", response_class=Response)
    async def git_info_refs(request: Request, service: str | None = None,
                            principal: Principal = READER) -> Response:
        """The ref advertisement of `git clone`/`git fetch` (service=git-upload-pack)."""
        skills = _skills(request)
        try:
            _clone_allowed(skills, principal)
            if service == "git-receive-pack":
                raise ProblemError(403, "the skills repository is read-only here; push to its upstream",
                                   slug="read-only")
            if service != smart_http.SERVICE:
                raise ProblemError(403, "only git's smart HTTP protocol is served (service=git-upload-pack)",
                                   slug="dumb-protocol")
            body = await skills.run(smart_http.advertisement)
        except ProblemError as error:
            return _for_git(request, error)
        return Response(body, media_type=smart_http.ADVERTISEMENT_TYPE, headers=GIT_NO_CACHE)

    @router.post("/git/git-upload-pack", response_class=Response)
    async def git_upload_pack(request: Request, principal: Principal = READER) -> Response:
        """Wants and haves in, a pack out (stateless RPC; gzip request bodies accepted)."""
        skills = _skills(request)
        try:
            _clone_allowed(skills, principal)
            if request.headers.get("content-type", "").split(";")[0].strip() != smart_http.REQUEST_TYPE:
                raise ProblemError(415, f"git-upload-pack takes {smart_http.REQUEST_TYPE}")
            body = await read_body(request, smart_http.REQUEST_MAX_BYTES)
            encoding = request.headers.get("content-encoding")
            try:
                result = await skills.stream(lambda path, write: smart_http.upload_pack(path, body, encoding, write))
            except GitProtocolError as error:
                raise ProblemError(400, f"git protocol error: {error}", slug="git-protocol") from None
        except ProblemError as error:
            return _for_git(request, error)
        return StreamingResponse(result, media_type=smart_http.RESULT_TYPE, headers=GIT_NO_CACHE)

    @router.post("/git/git-receive-pack", response_class=Response)
    async def git_receive_pack(request: Request, principal: Principal = READER) -> Response:
        """Pushing is refused: the mirror follows its upstream."""
        return _for_git(request, ProblemError(403, "the skills repository is read-only here; push to its upstream",
                                              slug="read-only"))

    return router
