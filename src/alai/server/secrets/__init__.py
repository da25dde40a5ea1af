"""secrets: secret backends (local encrypted store, Bitwarden `bws`/`bw`) mounted at
path prefixes, per-identity policies, audit, and a cache that outlives short outages."""

import contextlib

from alai.server.modules import Module


def _router():
    from alai.server.secrets import routes

    return routes.router_factory()


def build_backend(mount, app):
    from alai.server.secrets import local

    if mount.kind == "local":
        key, reason = None, None
        if app.state.settings.master_key is not None:
            key = local.parse_master_key(app.state.settings.master_key.get_secret_value())
        else:
            reason = "no master key: set ALAI_MASTER_KEY (make one with `alai admin secrets new-key`)"
        return local.LocalBackend(app.state.pool, key, missing_reason=reason, read_only=mount.read_only)
    from alai.server.secrets import bitwarden

    backend = bitwarden.BwsBackend(mount) if mount.kind == "bws" else bitwarden.BwBackend(mount)
    if mount.read_only:
        backend.read_only = True
    return backend


@contextlib.asynccontextmanager
async def _lifespan(app):
    import asyncio

    import structlog

    from alai.server.secrets import config as secrets_config
    from alai.server.secrets import service
    from alai.wire.secrets import PolicyIn

    log = structlog.get_logger("alai.secrets")
    configuration = secrets_config.load(app.state.settings.secrets_config)
    mounted = [service.MountedBackend(prefix=mount.prefix, backend=build_backend(mount, app))
               for mount in configuration.mounts]
    secrets = service.Secrets(pool=app.state.pool, mounts=mounted, cache_ttl=configuration.cache_ttl_seconds,
                              stale_max=configuration.stale_max_seconds)
    async def seed_policies() -> None:
        async with app.state.pool.connection(timeout=5) as conn:
            for item in configuration.policies:  # first start only: changes through the API win afterwards
                await service.put_policy(conn, name=item.name, actor="secrets-config", only_if_new=True,
                                         body=PolicyIn(principals=item.principals, actions=item.actions,
                                                       paths=item.paths, description=item.description))

    async def seed_until_done() -> None:
        # The database may be away at start (the server still starts; /readyz says why).
        while True:
            try:
                await seed_policies()
                return
            except Exception as error:
                log.warning("secrets policies not loaded yet", error=str(error).splitlines()[0] if str(error) else "")
                await asyncio.sleep(5)

    app.state.secrets = secrets
    seeding = asyncio.create_task(seed_until_done(), name="secrets-policies") if configuration.policies else None
    try:
        yield
    finally:
        if seeding is not None:
            seeding.cancel()
        await secrets.close()


MODULE = Module(
    name="secrets",
    summary="Secrets proxy (Bitwarden, local encrypted store)",
    depends_on=("identity",),
    router=_router,
    lifespan=_lifespan,
)
