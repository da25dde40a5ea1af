"""gateway: the model gateway — Ollama- and OpenAI-compatible routing across backends, failover, pause."""

import contextlib

from alai.server.modules import Module


def _router():
    from alai.server.gateway import anthropic_api, ollama_api, openai_api, routes

    router = ollama_api.router_factory()
    openai_api.add_routes(router)
    anthropic_api.add_routes(router)
    routes.add_routes(router)
    return router


@contextlib.asynccontextmanager
async def _lifespan(app):
    import httpx

    from alai.server.gateway import config as gateway_config
    from alai.server.gateway.backends import Backends
    from alai.server.gateway.proxy import Gateway
    from alai.server.gateway.upstream import Upstream
    from alai.server.gateway.usage import UsageRecorder

    configuration = gateway_config.load(app.state.settings.gateway_config)
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))
    backends = Backends(configuration, client)
    recorder = UsageRecorder(app.state.pool, configuration)
    upstream = Upstream()
    keys = None
    try:
        await upstream.start()
        await backends.start()
        await recorder.start()
        app.state.gateway = Gateway(configuration, backends, client, upstream)
        app.state.gateway_usage = recorder
        keys = _secret_keys(app, configuration)
        yield
    finally:
        if keys is not None:
            keys.cancel()
        await backends.stop()
        await recorder.stop()
        await client.aclose()
        await upstream.stop()


def _secret_keys(app, configuration):
    """API keys given as `secret://path` are read from the secrets module, at start and
    every minute after (a rotated key is picked up); until the first read succeeds the
    backend is called without a key and says so in its errors."""
    import asyncio

    import structlog
    from pydantic import SecretStr

    log = structlog.get_logger("alai.gateway")
    referenced = {backend.name: backend.api_key.get_secret_value() for backend in configuration.backends
                  if backend.api_key is not None and backend.api_key.get_secret_value().startswith("secret://")}
    if not referenced:
        return None
    by_name = {backend.name: backend for backend in configuration.backends}
    for name in referenced:
        by_name[name].api_key = None

    async def refresh() -> None:
        delay = 1.0
        while True:
            secrets = getattr(app.state, "secrets", None)
            failed = False
            for name, reference in referenced.items():
                try:
                    if secrets is None:
                        raise RuntimeError("the secrets module is not served by this process (ALAI_MODULES)")
                    by_name[name].api_key = SecretStr(await secrets.system_read(reference))
                except Exception as error:  # never the value: the reference and the reason only
                    failed = True
                    log.error("gateway API key not read", backend=name, reference=reference,
                              error=getattr(error, "detail", None) or str(error))
            await asyncio.sleep(min(delay, 60.0) if failed else 60.0)
            delay = delay * 2 if failed else 1.0

    return asyncio.create_task(refresh(), name="gateway-secret-keys")


MODULE = Module(
    name="gateway",
    summary="Model gateway (Ollama-compatible)",
    depends_on=("identity", "secrets"),
    router=_router,
    lifespan=_lifespan,
)
