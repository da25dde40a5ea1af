"""Shared CLI plumbing: the profile/client for a command, JSON output, tables, errors."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click


def console():  # -> rich.console.Console; imported lazily, it costs ~30 ms
    from rich.console import Console

    plain = bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()
    # color_system=None drops every escape code (bold and dim too), not only colours.
    return Console(no_color=plain, color_system=None if plain else "auto", highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def local_time(value: str | datetime | None) -> str:
    """A UTC timestamp from the API as the user's local time."""
    if value is None:
        return "-"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def client_for(ctx: click.Context) -> Iterator[Any]:
    """A client for the chosen profile; client errors become one-line CLI errors."""
    from alai.client import http, profiles

    try:
        profile = profiles.resolve((ctx.find_root().obj or {}).get("profile"))
    except profiles.ProfileError as error:
        raise click.ClickException(str(error)) from None
    client = http.Client(profile)
    try:
        yield client
    except http.ClientError as error:
        raise click.ClickException(str(error)) from None
    finally:
        client.close()
