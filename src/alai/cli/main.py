"""The root of the `alai` command: a group whose subcommands are imported on first use.

`alai --version` and `alai --help` must stay fast, so nothing heavy is imported
here: each command lives in its own module under `alai.cli` and is loaded only
when it is run (or when its help is shown).
"""

from __future__ import annotations

import importlib
import sys

import click

from alai._version import __version__

# name -> (module, attribute, one-line help shown by `alai --help` without importing it)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": ("alai.cli.serve", "serve", "Run the control plane (with its own PostgreSQL if none is configured)."),
    "status": ("alai.cli.status", "status", "Show the state of the control plane, its database and modules."),
    "config": ("alai.cli.config", "config", "Show and change client profiles (server URL …)."),
    "admin": ("alai.cli.admin", "admin", "Administer the control plane's database (migrations, users, tokens, keys)."),
    "login": ("alai.cli.auth", "login", "Sign in to the control plane (browser, OAuth 2.0 with PKCE)."),
    "logout": ("alai.cli.auth", "logout", "Sign out: revoke and forget this profile's login."),
    "whoami": ("alai.cli.auth", "whoami", "Show who the control plane thinks you are."),
    "auth": ("alai.cli.auth", "auth", "Inspect how this machine authenticates (auth status)."),
    "mc": ("alai.cli.mc", "mc", "Mission Control: list, show, create and change tasks; watch changes live."),
    "hive": ("alai.cli.hive", "hive", "HiveMind: publish, subscribe live, read history; the agents' shared memory."),
    "gateway": ("alai.cli.gateway", "gateway", "The model gateway: which backend is up, where models go now."),
    "start": ("alai.cli.start", "start", "Start the local :11434 model proxy (scripts for Ollama keep working)."),
    "agent": ("alai.cli.agent", "agent", "Agents and their runs: run one and follow it, logs, cancel, definitions."),
    "nodes": ("alai.cli.nodes", "nodes", "Show the data-plane nodes and workers: heartbeat, models, running runs."),
    "node": ("alai.cli.node", "node", "Run the data-plane daemon on a model machine (alai node start)."),
    "worker": ("alai.cli.node", "worker", "Run a cloud worker for runs whose models the gateway serves."),
    "secrets": ("alai.cli.secrets", "secrets", "Secrets: list, read, write; the audit of who read what."),
    "run": ("alai.cli.run", "run", "Run a command with secrets in its environment, masked in its output."),
    "skills": ("alai.cli.skills", "skills", "Skills, rules and agents: sync them into ~/.claude, list, read."),
    "doctor": ("alai.cli.doctor", "doctor", "Check this machine's set-up (server, token, skills, proxy, clock) and say how to fix it."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[name]
        return getattr(importlib.import_module(module_name), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listed from the table above, so `alai --help` imports no command module.
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="alai", message="%(prog)s %(version)s")
@click.option("--profile", "-p", envvar="ALAI_PROFILE", help="Client profile to use (default: the current one).")
@click.pass_context
def root(ctx: click.Context, profile: str | None) -> None:
    """alai: the control plane, its CLI and the data-plane daemon.

    Start with `alai serve` on the machine that runs the control plane, then
    `alai status` from any machine configured to reach it.
    """
    ctx.obj = {"profile": profile}


def cli() -> None:
    """Console-script entry point: exit codes 0 (ok), 1 (failed), 2 (usage)."""
    try:
        root.main(prog_name="alai")
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)
