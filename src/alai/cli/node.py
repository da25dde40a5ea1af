"""`alai node start` (the daemon on a model machine) and `alai worker` (a cloud worker)."""

from __future__ import annotations

import re

import click

_COMMAND = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]{0,63})=(.+)$")


def _commands(values: tuple[str, ...]) -> dict[str, str]:
    commands = {}
    for value in values:
        match = _COMMAND.match(value)
        if not match:
            raise click.BadParameter(f"{value!r} is not NAME=COMMAND LINE (e.g. claude='claude -p "
                                     "--output-format stream-json --verbose')", param_hint="--command")
        commands[match[1]] = match[2]
    return commands


def _config(ctx: click.Context, name: str | None, kind: str, concurrency: int, grace: float):
    from alai.client import profiles
    from alai.node.daemon import Config, default_name

    try:
        profile = profiles.resolve((ctx.find_root().obj or {}).get("profile"))
    except profiles.ProfileError as error:
        raise click.ClickException(str(error)) from None
    if not profile.token:
        raise click.ClickException("a node needs a token with the scope 'node': create one with "
                                   "`alai admin token create NAME --scopes node` and set ALAI_TOKEN")
    return Config(server=profile.server, token=profile.token, name=name or default_name(), kind=kind,
                  concurrency=concurrency, grace_seconds=grace)


async def _command(executors, client, named: dict[str, str], spec, emit):
    """A named command, with the agent's secrets in its environment."""
    try:
        extra = await executors.resolve_env(client, spec)
    except executors.SecretsUnavailable as error:
        return executors.Outcome("failed", error=f"the agent's secrets could not be read: {error}")
    return await executors.run_command(named[spec.command], spec, emit, extra_env=extra)


def _run(daemon) -> None:
    import asyncio

    try:
        asyncio.run(daemon.run())
    except KeyboardInterrupt:  # pragma: no cover - the handler normally takes it
        pass


COMMON = [
    click.option("--name", help="This worker's name (default: the host name)."),
    click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 100),
                 help="Runs executed at once."),
    click.option("--command", "commands", multiple=True, metavar="NAME=CMDLINE",
                 help="A command agents may name (executor: command); repeat for more."),
    click.option("--grace", default=30.0, show_default=True, type=click.FloatRange(0, 3600),
                 help="On stop, seconds running runs get to finish before they are given back."),
]


def common(function):
    for option in reversed(COMMON):
        function = option(function)
    return function


@click.group()
def node() -> None:
    """The data-plane daemon for machines that keep models (ANVIL, FORGE)."""


@node.command()
@common
@click.option("--ollama", default="http://127.0.0.1:11434", show_default=True, envvar="ALAI_NODE_OLLAMA",
              help="The local Ollama whose models this node serves.")
@click.option("--refresh", default=15.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds between checks of the local models.")
@click.pass_context
def start(ctx: click.Context, name: str | None, concurrency: int, commands: tuple[str, ...], grace: float,
          ollama: str, refresh: float) -> None:
    """Register with the control plane and execute runs for the local models.

    Advertises the models the local Ollama has (checked every --refresh seconds: a
    model pulled or removed, or Ollama going away, changes what this node takes),
    claims runs over HTTPS, streams their output back, and keeps going through
    control-plane restarts and network loss. Ctrl-C (SIGTERM) stops claiming and
    lets running runs finish for --grace seconds; a second one gives them back now.
    """
    import httpx

    from alai.node import capabilities as caps
    from alai.node import executors
    from alai.node.daemon import Daemon

    config = _config(ctx, name, "node", concurrency, grace)
    named = _commands(commands)
    probe = httpx.AsyncClient()

    reachable = [True]

    async def advertised() -> list[str]:
        models = await caps.ollama_models(probe, ollama)
        if (models is not None) != reachable[0]:
            reachable[0] = models is not None
            click.echo(f"Ollama at {ollama} is {'back' if reachable[0] else 'not answering'}: offering "
                       f"{'its models again' if reachable[0] else 'no models until it is (their runs wait)'}",
                       err=True)
        return caps.capabilities(models or [], named)

    async def execute(execution, emit):
        spec = execution.spec
        if spec.command:
            return await _command(executors, probe, named, spec, emit)
        return await executors.ollama_chat(probe, ollama, spec, emit)

    click.echo(f"alai node {config.name}: serving {ollama} for {config.server} (Ctrl-C to stop)", err=True)
    _run(Daemon(config, capabilities=advertised, executor=execute, refresh_seconds=refresh))


@click.command()
@common
@click.option("--model", "models", multiple=True,
              help="A model this worker takes runs for (through the gateway); default: every model the gateway "
                   "routes to a cloud backend.")
@click.pass_context
def worker(ctx: click.Context, name: str | None, concurrency: int, commands: tuple[str, ...], grace: float,
           models: tuple[str, ...]) -> None:
    """Execute runs whose models the gateway serves from the cloud (Anthropic, Together …).

    Its model calls go through the control plane's gateway with this worker's token
    (scopes 'node' and 'gateway:use'), so failover and usage accounting apply.
    """
    import httpx

    from alai.node import capabilities as caps
    from alai.node import executors
    from alai.node.daemon import Daemon

    config = _config(ctx, name, "worker", concurrency, grace)
    named = _commands(commands)
    client = httpx.AsyncClient()
    auth = {"Authorization": f"Bearer {config.token}"}

    async def advertised() -> list[str]:
        chosen = list(models) or await caps.cloud_models(client, config.server, config.token) or []
        return caps.capabilities(chosen, named)

    async def execute(execution, emit):
        spec = execution.spec
        if spec.command:
            return await _command(executors, client, named, spec, emit)
        return await executors.ollama_chat(client, config.server, spec, emit, headers=auth)

    click.echo(f"alai worker {config.name}: running cloud-model runs for {config.server} (Ctrl-C to stop)", err=True)
    _run(Daemon(config, capabilities=advertised, executor=execute))
