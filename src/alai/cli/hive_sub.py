"""`alai hive sub`: messages of a topic or pattern live, from the server's event stream.

The stream's `id:` is a position; `sse.follow` resumes after the last one it saw
(Last-Event-ID), which is also where an `overflow` event says to resume (the server
names the position of the last message it sent), so neither a lost connection nor
falling behind loses or repeats a message.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from alai.cli.hive import HIVE, format_message, hive, terminal_width, use_color
from alai.cli.output import client_for

SUBSCRIBE_PATH = f"{HIVE}/subscribe"
STREAM_READ_TIMEOUT = 45.0  # three missed keep-alives (sent every 15 s): the connection is dead


class TimeUp(BaseException):
    """--timeout ran out; a BaseException like KeyboardInterrupt, so no `except Exception` on the way swallows it."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raises TimeUp in the main thread after `seconds`, even inside a blocking read."""
    if seconds is None:
        yield
        return
    if not hasattr(signal, "setitimer"):  # Windows: no SIGALRM; wakes the main thread at its next bytecode
        import _thread

        timer = threading.Timer(seconds, _thread.interrupt_main)
        timer.start()
        try:
            yield
        except KeyboardInterrupt:
            if timer.is_alive():
                raise
            raise TimeUp from None
        finally:
            timer.cancel()
        return

    def ring(signum: int, frame: object) -> None:
        raise TimeUp

    previous_handler = signal.signal(signal.SIGALRM, ring)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_delay:  # someone's timer was running (pytest-timeout's, in a test): what is left of it
            left = max(previous_delay - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, previous_interval)


def _stdout_gone() -> None:
    """The reader of our stdout left (`| head -3`): stop quietly, without Python's complaint at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


@hive.command()
@click.argument("pattern", metavar="TOPIC|PATTERN")
@click.option("--from", "start", default="now", show_default=True, metavar="now|ID|POSITION",
              help="Start after this message id or stream position; 0 replays every stored message.")
@click.option("--count", "-n", type=click.IntRange(min=1), help="Stop after this many messages.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop after this many seconds (with --count: fail if fewer had come).")
@click.option("--json", "as_json", is_flag=True, help="Each message as the API sends it, one per line (JSON Lines).")
@click.pass_context
def sub(ctx: click.Context, pattern: str, start: str, count: int | None, timeout: float | None,
        as_json: bool) -> None:
    """Follow the messages of a topic or pattern live, one line each, until Ctrl-C.

    PATTERN: agents.* (one segment), tenders.> (all below). A dropped connection,
    a restarted server, or falling too far behind is resumed after the last message
    received, retrying every 0.5 s up to every 10 s (reported on stderr): no message
    is lost or repeated.
    """
    from alai.client import sse
    from alai.wire.hive import Message

    received = 0
    overflowed = False

    def connected() -> None:
        click.echo(f"subscribed to {pattern} on {client.profile.server} (Ctrl-C to stop)", err=True)

    def retrying(reason: str, delay: float) -> None:
        nonlocal overflowed
        if not overflowed:  # after an overflow the server ends the stream: that is no news
            click.echo(f"connection lost ({reason}); reconnecting in {delay:g} s", err=True)
        overflowed = False

    color, width = use_color(), terminal_width()
    try:
        with deadline(timeout), client_for(ctx) as client:
            for event, data in sse.follow(client, SUBSCRIBE_PATH, params={"topic": pattern, "from": start},
                                          read_timeout=STREAM_READ_TIMEOUT, on_connect=connected,
                                          on_retry=retrying):
                if event == "overflow":
                    overflowed = True
                    resume_from = json.loads(data).get("resume_from")
                    click.echo(f"fell too far behind; resuming after {resume_from}", err=True)
                    continue
                if event != "message":
                    continue
                if as_json:
                    click.echo(data)
                else:
                    message = Message.model_validate_json(data)
                    click.echo(format_message(message, width=width, color=color), color=color or None)
                received += 1
                if count is not None and received >= count:
                    return
    except KeyboardInterrupt:
        return
    except TimeUp:
        if count is not None and received < count:
            raise click.ClickException(f"only {received} of {count} messages within {timeout:g} s") from None
    except BrokenPipeError:
        _stdout_gone()
