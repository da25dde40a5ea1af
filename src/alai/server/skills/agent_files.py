"""Agent definitions found in the repository (`agents/*.md` at the default branch) are
what the runner loads: each is registered with the runs module (a new version only
when its text changed), and an agent the repository put there and no longer holds is
removed. A file that cannot be read is logged and skipped; it does not stop the others.
"""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
import structlog
from dulwich.objects import Blob, Tree

from alai.server.runs import agents
from alai.server.skills import mirror

log = structlog.get_logger("alai.skills")
AGENTS_FOLDER = b"agents"
ACTOR = "skills"


def read_definitions(path: Path, commit_id: str) -> list[tuple[str, bytes]]:
    """(file name, content) of every agents/*.md at `commit_id`."""
    with mirror.open_repo(path) as repo:
        commit = mirror.peel_to_commit(repo, commit_id.encode())
        if commit is None:
            return []
        root = repo.object_store[commit.tree]
        assert isinstance(root, Tree)
        try:
            mode, sha = root[AGENTS_FOLDER]
        except KeyError:
            return []
        folder = repo.object_store[sha]
        if not isinstance(folder, Tree):
            return []
        found = []
        for entry in folder.iteritems():
            name = entry.path.decode(errors="replace")
            obj = repo.object_store[entry.sha] if name.endswith(".md") else None
            if isinstance(obj, Blob):
                found.append((name, obj.as_raw_string()))
        return found


async def register(pool, path: Path, commit_id: str) -> None:
    """Registers the definitions at `commit_id`; raises only if the database is unreachable."""
    files = await anyio.to_thread.run_sync(read_definitions, path, commit_id)
    present: set[str] = set()
    for filename, content in files:
        name = filename.removesuffix(".md")
        try:
            text = content.decode("utf-8")
            front, _ = agents.parse(text)
            name = str(front.get("name") or name)
            present.add(name)
            async with pool.connection(timeout=10) as conn, conn.transaction():
                agent, changed = await agents.put(conn, name=name, definition=text, actor=ACTOR)
            if changed:
                log.info("agent loaded from the skills repository", agent=name, version=agent.version,
                         file=f"agents/{filename}", commit=commit_id[:12])
        except Exception as error:  # a bad file is skipped, the others still load
            present.add(name)  # and the version the runner has stays
            if _is_database_error(error):
                raise
            log.error("agent definition in the skills repository not loaded", file=f"agents/{filename}",
                      commit=commit_id[:12], error=getattr(error, "detail", None) or str(error))
    async with pool.connection(timeout=10) as conn:
        registered = await agents.list_all(conn)
    for agent in registered:
        if agent.updated_by == ACTOR and agent.name not in present:
            async with pool.connection(timeout=10) as conn, conn.transaction():
                await agents.delete(conn, name=agent.name)
            log.info("agent removed: no longer in the skills repository", agent=agent.name, commit=commit_id[:12])


def _is_database_error(error: Exception) -> bool:
    import psycopg
    import psycopg_pool

    return isinstance(error, psycopg.OperationalError | psycopg_pool.PoolTimeout)
