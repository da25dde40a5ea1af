"""skills: a mirror of the skills/rules/agents git repository (ALAI_SKILLS_REPO), served
as refs, trees, files (ETags), archives and a read-only git clone; its agents/*.md are
the agent definitions the runner loads."""

import contextlib

from alai.server.modules import Module


def _router():
    from alai.server.skills import routes

    return routes.router_factory()


@contextlib.asynccontextmanager
async def _lifespan(app):
    import asyncio
    import logging

    from alai.server.background import periodic
    from alai.server.skills import service

    # dulwich says "Sending capabilities" … at info for every clone: keep its warnings only.
    logging.getLogger("dulwich").setLevel(logging.WARNING)
    settings = app.state.settings
    skills = service.Skills(settings, pool=app.state.pool, secrets=lambda: getattr(app.state, "secrets", None),
                            instance_id=app.state.instance_id)
    app.state.skills = skills
    if not skills.configured:
        yield
        return
    await skills.start()
    # The first fetch runs in the background: the server starts even when the git host is away.
    listener = asyncio.create_task(skills.listen(settings.database_url.get_secret_value()), name="skills-listen")
    try:
        async with periodic("skills-fetch", settings.skills_refresh_seconds, skills.scheduled_fetch, stop_timeout=30):
            yield
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(listener, 5)
        await skills.close()


async def _status(app):
    from alai.wire.ops import ModuleStatus

    skills = getattr(app.state, "skills", None)
    if skills is None or not skills.configured:
        return ModuleStatus(name="skills", state="disabled", detail="no repository configured (ALAI_SKILLS_REPO)")
    status = skills.status()
    if status.head_commit is None:
        return ModuleStatus(name="skills", state="degraded",
                            detail=f"not mirrored yet{f': {status.error}' if status.error else ''}")
    age = f"{status.age_seconds:.0f} s ago" if status.age_seconds is not None else "at an unknown time"
    if status.error:
        return ModuleStatus(name="skills", state="degraded",
                            detail=f"serving the mirror fetched {age}; the last fetch failed: {status.error}")
    return ModuleStatus(name="skills", state="ok",
                        detail=f"{status.head_ref} at {status.head_commit[:12]}, fetched {age}")


MODULE = Module(
    name="skills",
    summary="Skills/rules/agents git mirror",
    depends_on=("identity", "secrets", "runs"),
    router=_router,
    lifespan=_lifespan,
    status=_status,
)
