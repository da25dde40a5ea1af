"""`alai admin secrets new-key`: a master key for the local encrypted secrets store."""

from __future__ import annotations

import base64
import os

import click

from alai.cli.admin import admin


@admin.group("secrets")
def secrets_group() -> None:
    """The secrets module's own keys."""


@secrets_group.command("new-key")
def new_key() -> None:
    """Print a new master key (32 random bytes, base64) for ALAI_MASTER_KEY.

    Keep it where the control plane's other secrets are kept; values stored under one
    key cannot be read under another.
    """
    click.echo(base64.b64encode(os.urandom(32)).decode())
