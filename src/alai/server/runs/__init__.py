"""runs: the agent runner — agent definitions, runs, dispatch with leases, run events,
and the data-plane nodes and cloud workers that execute them (one module: claims,
heartbeats and leases are one protocol)."""

import contextlib

from alai.server.modules import Module


def _router():
    from alai.server.runs import routes

    return routes.router_factory()


@contextlib.asynccontextmanager
async def _lifespan(app):
    import asyncio

    import structlog

    from alai.server import idempotency, streams
    from alai.server.background import periodic
    from alai.server.runs import agents, outcomes, routes, service

    log = structlog.get_logger("alai.runs")
    settings = app.state.settings
    wakeup = streams.Wakeup()
    app.state.runs_wakeup = wakeup
    app.state.runs_agents_seen = {}  # service.create: agent versions read, checked at each insert
    listener = asyncio.create_task(
        streams.listen_forever(settings.database_url.get_secret_value(), service.NOTIFY_CHANNEL, wakeup),
        name="runs-listen")

    if settings.agents_dir is not None:
        for name, text in agents.definitions_in(settings.agents_dir):
            try:
                async with app.state.pool.connection() as conn, conn.transaction():
                    agent, changed = await agents.put(conn, name=name, definition=text, actor="agents-dir")
                if changed:
                    log.info("agent loaded", agent=name, version=agent.version)
            except Exception as error:  # one bad file does not stop the others, nor the server
                log.error("agent definition not loaded", agent=name, directory=str(settings.agents_dir),
                          error=getattr(error, "detail", None) or str(error))

    async def sweep() -> None:
        async with app.state.pool.connection(timeout=5) as conn, conn.transaction():
            changed = await service.sweep(conn, limits=routes.limits_of(app))
            if changed:
                await outcomes.apply(conn, changed, settings)
        if changed:
            await routes.after_commit(app, changed)

    async def prune() -> None:
        async with app.state.pool.connection(timeout=5) as conn:
            await idempotency.prune(conn, table="run_idempotency")

    try:
        async with periodic("runs-sweep", settings.runs_sweep_seconds, sweep), \
                periodic("runs-idempotency-prune", 3600, prune):
            yield
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(listener, 5)


MODULE = Module(
    name="runs",
    summary="Agent runner and data-plane nodes",
    depends_on=("identity", "mc", "hive"),
    router=_router,
    lifespan=_lifespan,
)
