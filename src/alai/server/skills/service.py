"""The skills service: one mirror per replica, fetched on start, on a schedule, on
demand and on the git host's webhook; read by the routes; its agents registered with
the runner.

One fetch runs at a time per replica (a lock); a webhook, or a NOTIFY from the replica
that got the webhook or a refresh, asks for one more after the current one, and a
burst of them makes one fetch.
A failed fetch is recorded (one line, credentials redacted) and changes nothing on
disk: the last mirrored state keeps being served, and the status says how old it is.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import structlog
from dulwich.repo import Repo

from alai.server.deps import Principal
from alai.server.problems import ProblemError
from alai.server.settings import Settings
from alai.server.skills import agent_files, bridge, mirror
from alai.server.skills.privacy import NOTHING_PRIVATE, PrivatePaths
from alai.wire.skills import PRIVATE_SCOPE, SkillsStatus

log = structlog.get_logger("alai.skills")
NOTIFY_CHANNEL = "skills_fetch"
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Skills:
    def __init__(self, settings: Settings, *, pool: Any, secrets: Callable[[], Any], instance_id: str = "") -> None:
        self.pool = pool
        self.instance_id = instance_id
        self._secrets = secrets
        self.private = PrivatePaths.parse(settings.skills_private)  # a bad glob stops the start: fail closed
        self.upstream = mirror.Upstream(settings.skills_repo) if settings.skills_repo else None
        self._token = settings.skills_token.get_secret_value() if settings.skills_token else None
        self._webhook_secret = settings.skills_webhook_secret.get_secret_value().encode() \
            if settings.skills_webhook_secret else None
        self.config_error: str | None = None
        self.path: Path | None = None
        if self.upstream is not None:
            try:
                self.path = mirror.mirror_path(settings.skills_mirror_dir or settings.data_dir / "skills-mirror",
                                               self.upstream)
            except mirror.UnsupportedRepo as error:
                self.config_error = str(error)
        state = mirror.read_state(self.path) if self.path else {}
        self.last_fetch_at: datetime | None = state.get("last_fetch_at")
        self.last_success_at: datetime | None = state.get("last_success_at")
        self.error: str | None = self.config_error or state.get("error")
        self.summary = mirror.Summary(head_ref=None, head_commit=None, refs=0)
        self.fetching = False
        self._lock = asyncio.Lock()
        self._wanted = False
        self._drainer: asyncio.Task | None = None
        self._registered_commit: str | None = None

    @property
    def configured(self) -> bool:
        return self.upstream is not None

    # -- fetching ------------------------------------------------------------------------

    async def start(self) -> None:
        """Reads what an earlier run of this replica left on disk (served until the
        first fetch succeeds)."""
        if self.path is not None and (self.path / "objects").is_dir():
            self.summary = await anyio.to_thread.run_sync(self._summarize)

    def _summarize(self) -> mirror.Summary:
        assert self.path is not None
        with mirror.open_repo(self.path) as repo:
            return mirror.summarize(repo)

    async def _read_token(self) -> str | None:
        if not self._token or not self._token.startswith("secret://"):
            return self._token
        secrets = self._secrets()
        if secrets is None:
            raise RuntimeError("ALAI_SKILLS_TOKEN names a secret, but the secrets module is not served by this "
                               "process (ALAI_MODULES)")
        try:
            return await secrets.system_read(self._token)
        except Exception as error:  # the reference and the reason, never a value
            reason = getattr(error, "detail", None) or str(error)
            raise RuntimeError(f"the token {self._token} could not be read: {reason}") from None

    async def fetch(self, *, reason: str) -> SkillsStatus:
        """Fetches now (after the fetch running, if any) and answers the status after it."""
        if not self.configured:
            raise not_configured()
        async with self._lock:
            await self._fetch_locked(reason)
        return self.status()

    async def _fetch_locked(self, reason: str) -> None:
        assert self.upstream is not None
        self.fetching = True
        started = utcnow()
        token: str | None = None
        try:
            if self.config_error:
                raise RuntimeError(self.config_error)
            token = await self._read_token()
            assert self.path is not None
            result = await anyio.to_thread.run_sync(mirror.fetch, self.path, self.upstream, token)
        except Exception as error:
            self.error = self.upstream.scrub(_one_line(error), token)[:500]  # scrubbed before it is cut
            log.warning("skills repository not fetched; serving the last mirrored state", repo=self.upstream.redact(),
                        reason=reason, error=self.error, last_success_at=self.last_success_at)
        else:
            self.error = None
            self.last_success_at = utcnow()
            self.summary = result.after
            if result.changed_refs:
                log.info("skills repository fetched", repo=self.upstream.redact(), reason=reason,
                         changed_refs=result.changed_refs, head=result.after.head_ref,
                         commit=(result.after.head_commit or "")[:12])
        finally:
            self.last_fetch_at = started
            self.fetching = False
            if self.path is not None:
                try:
                    await anyio.to_thread.run_sync(lambda: mirror.write_state(
                        self.path, last_fetch_at=self.last_fetch_at, last_success_at=self.last_success_at,
                        error=self.error))
                except OSError as error:
                    log.warning("skills mirror state not saved", error=str(error))
        await self._register_agents()

    async def _register_agents(self) -> None:
        """After a fetch that moved the default branch (and once per process): the
        runner loads the agents found at HEAD."""
        commit = self.summary.head_commit
        if commit is None or commit == self._registered_commit or self.path is None:
            return
        try:
            await agent_files.register(self.pool, self.path, commit)
        except Exception as error:  # the database is away: try again after the next fetch
            log.warning("agents of the skills repository not registered", commit=commit[:12], error=str(error))
            return
        self._registered_commit = commit

    def schedule(self, *, reason: str) -> None:
        """Asks for a fetch soon, in the background; many asks while one waits make one fetch."""
        if not self.configured:
            return
        self._wanted = True
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(reason), name="skills-fetch-requested")

    async def _drain(self, reason: str) -> None:
        while self._wanted:
            self._wanted = False
            async with self._lock:
                await self._fetch_locked(reason)

    async def scheduled_fetch(self) -> None:
        async with self._lock:
            await self._fetch_locked("schedule")

    async def notify_others(self) -> None:
        """Tells the other replicas to fetch too (each LISTENs on NOTIFY_CHANNEL)."""
        try:
            async with self.pool.connection(timeout=5) as conn:
                await conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, self.instance_id))
        except Exception as error:
            log.warning("other replicas not told to fetch the skills repository", error=str(error))

    async def listen(self, conninfo: str) -> None:
        """Fetches when another replica was told to (webhook, refresh); listens again after a loss."""
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    async for notification in conn.notifies():
                        if notification.payload != self.instance_id:
                            self.schedule(reason="another replica")
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("skills listener lost its connection", error=str(error).split("\n")[0])
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        self._wanted = False
        if self._drainer is not None and not self._drainer.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._drainer), timeout=30)
            except (TimeoutError, Exception) as error:
                log.warning("skills fetch still running at shutdown", error=str(error) or type(error).__name__)

    # -- status --------------------------------------------------------------------------

    def status(self) -> SkillsStatus:
        if not self.configured:
            return SkillsStatus(configured=False)
        assert self.upstream is not None
        age = (utcnow() - self.last_success_at).total_seconds() if self.last_success_at else None
        return SkillsStatus(
            configured=True, repo=self.upstream.redact(), head_ref=self.summary.head_ref,
            head_commit=self.summary.head_commit, last_fetch_at=self.last_fetch_at,
            last_success_at=self.last_success_at, age_seconds=round(age, 3) if age is not None else None,
            error=self.error, refs=self.summary.refs, fetching=self.fetching)

    # -- the webhook ---------------------------------------------------------------------

    def verify_webhook(self, headers: Any, body: bytes) -> None:
        """GitHub's X-Hub-Signature-256 (HMAC-SHA256 of the body) or GitLab's X-Gitlab-Token."""
        if self._webhook_secret is None:
            raise ProblemError(404, "the skills webhook is disabled: set ALAI_SKILLS_WEBHOOK_SECRET and give the "
                                    "same secret to the git host", slug="webhook-disabled")
        signature = headers.get("x-hub-signature-256")
        token = headers.get("x-gitlab-token")
        if signature is not None:
            expected = b"sha256=" + hmac.new(self._webhook_secret, body, hashlib.sha256).hexdigest().encode()
            valid = hmac.compare_digest(signature.strip().lower().encode(errors="replace"), expected)
        elif token is not None:
            valid = hmac.compare_digest(token.encode(errors="replace"), self._webhook_secret)
        else:
            raise ProblemError(401, "a webhook call needs X-Hub-Signature-256 (GitHub, Gitea) or X-Gitlab-Token "
                                    "(GitLab)", slug="bad-webhook-signature")
        if not valid:
            raise ProblemError(401, "the webhook's signature does not match ALAI_SKILLS_WEBHOOK_SECRET",
                               slug="bad-webhook-signature")
        if not self.configured:
            raise not_configured()

    # -- reading -------------------------------------------------------------------------

    def hidden_for(self, principal: Principal) -> PrivatePaths:
        """What this caller may not see: the private globs, unless it has skills:private (or admin)."""
        return NOTHING_PRIVATE if principal.has_scope(PRIVATE_SCOPE) else self.private

    def _mirror_path(self) -> Path:
        if not self.configured:
            raise not_configured()
        if self.path is None:
            raise self._unavailable(self.config_error or "not mirrored")
        return self.path

    def _unavailable(self, why: str) -> ProblemError:
        detail = f"the skills repository is not mirrored yet ({why})"
        if self.error:
            detail += f"; last fetch: {self.error}"
        return ProblemError(503, detail, slug="skills-not-mirrored", headers={"Retry-After": "10"})

    async def read(self, work: Callable[[Repo], T]) -> T:
        """Runs `work(repo)` on the mirror in a worker thread."""
        path = self._mirror_path()

        def run() -> T:
            with mirror.open_repo(path) as repo:
                return work(repo)

        try:
            return await anyio.to_thread.run_sync(run)
        except mirror.MirrorEmpty as error:
            raise self._unavailable(str(error)) from None

    async def run(self, work: Callable[[Path], T]) -> T:
        """Runs `work(mirror path)` in a worker thread (for work that opens the repo itself)."""
        path = self._mirror_path()
        try:
            return await anyio.to_thread.run_sync(work, path)
        except mirror.MirrorEmpty as error:
            raise self._unavailable(str(error)) from None

    async def stream(self, produce: Callable[[Path, Callable[[bytes], None]], None]) -> AsyncIterator[bytes]:
        """Runs `produce(path, write)` in a worker thread and streams what it writes.
        Its first bytes are awaited here, so an error before them (404, a bad request)
        is still an HTTP error and not a cut-off body."""
        path = self._mirror_path()
        chunks = bridge.stream_from_thread(lambda write: produce(path, write))
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = b""
        except mirror.MirrorEmpty as error:
            await chunks.aclose()
            raise self._unavailable(str(error)) from None
        except BaseException:
            await chunks.aclose()
            raise

        async def rest() -> AsyncIterator[bytes]:
            try:
                if first:
                    yield first
                async for chunk in chunks:
                    yield chunk
            except Exception as error:
                log.error("skills stream failed after it started", error=str(error) or type(error).__name__)
                raise
            finally:
                await chunks.aclose()

        return rest()


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, RuntimeError) and text:
        return text  # our own messages say what to do
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def not_configured() -> ProblemError:
    return ProblemError(404, "no skills repository is configured on this control plane (ALAI_SKILLS_REPO)",
                        slug="skills-not-configured")
