"""`alai start`: the local :11434 proxy to the control plane's model gateway."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click

DEFAULT_PORT = 11434
READY_SECONDS = 15.0


def _state_path() -> Path:
    from alai.client.profiles import config_dir

    return config_dir() / "proxy.json"


def _read_state() -> dict | None:
    try:
        return json.loads(_state_path().read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _probe(host: str, port: int) -> dict | None:
    """What answers on host:port: {"alai": …} for our proxy, {"ollama": version}, {} for
    something else, None when nothing listens."""
    import httpx

    base = f"http://{host}:{port}"
    try:
        mine = httpx.get(base + "/_alai/proxy", timeout=2)
        if mine.status_code == 200 and mine.json().get("proxy") == "alai":
            return {"alai": mine.json()}
        version = httpx.get(base + "/api/version", timeout=2)
        if version.status_code == 200 and "version" in version.json():
            return {"ollama": version.json()["version"]}
        return {}
    except httpx.TransportError:
        return None
    except ValueError:
        return {}


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _port_taken_message(host: str, port: int) -> str:
    found = _probe(host, port)
    if found and "ollama" in found:
        return (f"port {port} is taken by a local Ollama ({found['ollama']}): stop it (quit the Ollama app, or "
                f"`systemctl stop ollama`), or run `alai start --port {port + 1}` and point scripts at it with "
                f"OLLAMA_HOST={host}:{port + 1}")
    return (f"port {port} on {host} is taken by another program: free it, or run `alai start --port {port + 1}` "
            f"and point scripts at it with OLLAMA_HOST={host}:{port + 1}")


@click.command("start")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              envvar="ALAI_PROXY_PORT", help="Local port (env ALAI_PROXY_PORT).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Local address to listen on.")
@click.option("--status", "show_status", is_flag=True, help="Say whether the proxy runs, where, and how busy.")
@click.option("--stop", is_flag=True, help="Stop the running proxy.")
@click.option("--foreground", is_flag=True, help="Run attached (for a service manager); Ctrl-C stops it.")
@click.pass_context
def start(ctx: click.Context, port: int, host: str, show_status: bool, stop: bool, foreground: bool) -> None:
    """Start the local model proxy: http://127.0.0.1:11434 answers as Ollama did,
    through the control plane's gateway, with your login (scripts keep working)."""
    if show_status:
        _status()
    elif stop:
        _stop()
    elif foreground:
        _run(ctx, host, port)
    else:
        _start_background(ctx, host, port)


def _status() -> None:
    state = _read_state()
    if not state or not _alive(state["pid"]):
        click.echo("alai start: not running")
        raise SystemExit(1)
    found = _probe(state["host"], state["port"]) or {}
    served = found.get("alai", {})
    click.echo(f"alai start: running on http://{state['host']}:{state['port']} → {state['server']} "
               f"(pid {state['pid']}, {served.get('forwarded', '?')} requests forwarded; log {state['log']})")


def _stop() -> None:
    state = _read_state()
    if not state or not _alive(state["pid"]):
        _state_path().unlink(missing_ok=True)
        click.echo("alai start: not running")
        return
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(state["pid"]):
        os.kill(state["pid"], signal.SIGKILL)
    _state_path().unlink(missing_ok=True)
    click.echo(f"alai start: stopped (port {state['port']} is free)")


def _profile(ctx: click.Context):
    from alai.client import profiles

    try:
        profile = profiles.resolve(_profile_name(ctx))
    except profiles.ProfileError as error:
        raise click.ClickException(str(error)) from None
    if not profile.token:
        raise click.ClickException(f"no credentials for {profile.server}: run `alai login` first")
    return profile


def _profile_name(ctx: click.Context) -> str | None:
    return (ctx.find_root().obj or {}).get("profile")


def _start_background(ctx: click.Context, host: str, port: int) -> None:
    state = _read_state()
    if state and _alive(state["pid"]) and (state["host"], state["port"]) == (host, port):
        click.echo(f"alai start: already running on http://{host}:{port} → {state['server']} (pid {state['pid']})")
        return
    if not _port_free(host, port):
        raise click.ClickException(_port_taken_message(host, port))
    profile = _profile(ctx)
    log = _state_path().with_name("proxy.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "alai", "start", "--foreground", "--host", host, "--port", str(port)]
    if _profile_name(ctx):
        command[3:3] = ["--profile", _profile_name(ctx)]
    with open(log, "ab") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
            raise click.ClickException(f"the proxy stopped at start: {lines[-1] if lines else 'see ' + str(log)}")
        found = _probe(host, port)
        if found and "alai" in found:
            break
        time.sleep(0.1)
    else:
        child.terminate()
        raise click.ClickException(f"the proxy did not answer within {READY_SECONDS:.0f} s; see {log}")
    _state_path().write_text(json.dumps({"pid": child.pid, "host": host, "port": port, "server": profile.server,
                                         "log": str(log)}))
    click.echo(f"alai start: http://{host}:{port} → {profile.server} (pid {child.pid}); "
               "stop with `alai start --stop`")


def _run(ctx: click.Context, host: str, port: int) -> None:
    import uvicorn

    from alai.client.http import Client
    from alai.client.local_proxy import LocalProxy, Tokens

    if not _port_free(host, port):
        raise click.ClickException(_port_taken_message(host, port))
    profile = _profile(ctx)
    client = Client(profile)
    app = LocalProxy(server=profile.server, tokens=Tokens(client))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", ws="none",
                            http="h11", access_log=False, server_header=False)
    click.echo(f"alai start: http://{host}:{port} → {profile.server}", err=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"alai start: warning: listening on {host}, not loopback — requests are still only answered "
                   "when addressed to localhost, but the port is visible to the network", err=True)
    with contextlib.closing(client):
        uvicorn.Server(config).run()
