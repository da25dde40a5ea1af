"""Skills, rules and agents: the control plane's mirror of one git repository.

HTTP surface (JSON unless said otherwise; errors are problem+json; `ref` is a branch,
a tag, a full `refs/...` name or a 40-hex commit id, default: the upstream's HEAD):

  GET  /v1/skills/status                    → SkillsStatus                           skills:read
  POST /v1/skills/refresh                   → SkillsStatus after a fetch             admin
  POST /v1/skills/webhook                   → 202 WebhookAccepted                    public, shared secret
       (GitHub `X-Hub-Signature-256: sha256=<hmac of the body>` or GitLab `X-Gitlab-Token`;
        401 when wrong or missing, 404 when ALAI_SKILLS_WEBHOOK_SECRET is not set)
  GET  /v1/skills/refs                      → SkillRefs                              skills:read
  GET  /v1/skills/tree[/{path}]?ref=&recursive= → SkillTree                         skills:read
  GET  /v1/skills/files/{path}?ref=         → the raw bytes; ETag "<blob id>",      skills:read
       If-None-Match → 304, Cache-Control: no-cache, X-Alai-Commit
  GET  /v1/skills/archive[/{path}]?ref=&format=tar.gz|zip → the subtree, streamed; skills:read
       paths inside are relative to {path}; ETag, If-None-Match → 304
  GET  /v1/skills/git/info/refs?service=git-upload-pack   git smart HTTP (v0/v1)      skills:read
  POST /v1/skills/git/git-upload-pack                                                 skills:read
       (read-only: receive-pack answers 403; with private paths configured, cloning
        needs skills:private, since a clone carries every folder)

Unknown ref or path → 404; a malformed ref → 422; no mirrored content yet → 503 (with
the fetch error). Paths matching ALAI_SKILLS_PRIVATE are 404, and left out of trees
and archives, unless the caller has `skills:private` (or `admin`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

READ_SCOPE = "skills:read"
PRIVATE_SCOPE = "skills:private"
ArchiveFormat = Literal["tar.gz", "zip"]
EntryType = Literal["blob", "tree", "commit"]


class SkillsStatus(BaseModel):
    """What this replica's mirror holds and how fresh it is."""

    configured: bool
    # The upstream as configured, with credentials and query strings replaced by ***.
    repo: str | None = None
    head_ref: str | None = None
    head_commit: str | None = None
    last_fetch_at: datetime | None = None
    last_success_at: datetime | None = None
    # Seconds since the last successful fetch: how old the served state may be.
    age_seconds: float | None = None
    # The last fetch's failure (one line, credentials redacted); None after a success.
    error: str | None = None
    # Branches and tags mirrored.
    refs: int = 0
    fetching: bool = False


class SkillRef(BaseModel):
    name: str  # main, v1.0
    ref: str  # refs/heads/main, refs/tags/v1.0
    commit: str  # the commit it points at (an annotated tag is peeled)
    tag: str | None = None  # an annotated tag's own object id


class SkillRefs(BaseModel):
    head_ref: str | None = None
    head_commit: str | None = None
    branches: list[SkillRef]
    tags: list[SkillRef]


class TreeEntry(BaseModel):
    path: str  # from the repository's root
    name: str
    type: EntryType  # commit: a submodule
    mode: str  # git's octal mode: 100644, 100755 (executable), 120000 (symlink), 040000, 160000
    id: str
    size: int | None = None  # blobs only


class SkillTree(BaseModel):
    ref: str  # what `ref` resolved to: refs/heads/main, a tag, or the commit id
    commit: str
    path: str  # "" for the root
    id: str  # the tree's id
    entries: list[TreeEntry]


class WebhookAccepted(BaseModel):
    accepted: bool = True
    detail: str
