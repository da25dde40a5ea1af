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
    from alai.server.gateway.usage import UsageRecorder

    configuration = gateway_config.load(app.state.settings.gateway_config)
    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))
    backends = Backends(configuration, client)
    recorder = UsageRecorder(app.state.pool, configuration)
    await backends.start()
    await recorder.start()
    app.state.gateway = Gateway(configuration, backends, client)
    app.state.gateway_usage = recorder
    try:
        yield
    finally:
        await backends.stop()
        await recorder.stop()
        await client.aclose()


MODULE = Module(
    name="gateway",
    summary="Model gateway (Ollama-compatible)",
    depends_on=("identity",),
    router=_router,
    lifespan=_lifespan,
)
