"""`alai hive`: HiveMind topics, messages and shared memory from the terminal.

`pub` sends one Idempotency-Key per run (per request of a batch), so its retry after
a lost answer stores the message once. Topics are checked here with the wire's own
pattern: a topic is part of the URL path, and a name with `/` would reach another
route. Memory keys may hold `/` (the route takes the rest of the path); each segment
is quoted on its own. `sub` lives in `hive_sub.py`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import click

from alai.cli.mc import SinceParam, _print_table, one_line
from alai.cli.output import client_for, local_time, print_json
from alai.wire.hive import BATCH_MAX, PAYLOAD_MAX_BYTES, TOPIC_MAX, TOPIC_PATTERN

HIVE = "/v1/hive"
BATCH_BYTES = 8 * 1024 * 1024  # per request of a batch: 1,000 large messages would make one huge body
HISTORY_PAGE = 1000  # the API's largest page
RETRYABLE_STATUSES = (502, 503, 504)

# -- pure helpers (tests/unit/test_hive_cli_format.py) --------------------------------------

_TOPIC = re.compile(TOPIC_PATTERN)


def check_topic(name: str) -> str:
    if len(name) > TOPIC_MAX or not _TOPIC.match(name):
        raise click.ClickException(f"{name!r} is not a topic name: use dotted segments of letters, digits, _ and - "
                                   "(agents.status)")
    return name


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def message_body(text: str, as_type: str, where: str = "the message") -> dict[str, Any]:
    """{"json": value} when `text` is JSON (auto) or must be (json), else {"text": text}."""
    if as_type == "text":
        body: dict[str, Any] = {"text": text}
    else:
        try:
            body = {"json": json.loads(text, parse_constant=_reject_constant)}
        except ValueError as error:
            if as_type == "json":
                reason = str(error).splitlines()[0]
                raise click.ClickException(f"{where} is not valid JSON ({reason}); fix it, or drop --json-payload "
                                           "to send it as text") from None
            body = {"text": text}
    size = len(json.dumps(next(iter(body.values())), ensure_ascii=False).encode())
    if size > PAYLOAD_MAX_BYTES:
        raise click.ClickException(f"{where} is too large: {size:,} bytes as JSON; at most {PAYLOAD_MAX_BYTES:,} "
                                   f"({PAYLOAD_MAX_BYTES // 1024} KiB) are allowed")
    return body


def parse_headers(values: Iterable[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, equals, text = value.partition("=")
        if not equals or not name.strip():
            raise click.ClickException(f"--header {value!r} must be NAME=VALUE")
        headers[name.strip()] = text
    return headers


def chunk_messages(messages: list[dict[str, Any]], max_count: int = BATCH_MAX,
                   max_bytes: int = BATCH_BYTES) -> list[list[dict[str, Any]]]:
    """Requests of at most `max_count` messages and about `max_bytes`, in order; never an empty one."""
    chunks: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for message in messages:
        length = len(json.dumps(message, ensure_ascii=False).encode()) + 1
        if current and (len(current) == max_count or size + length > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(message)
        size += length
    if current:
        chunks.append(current)
    return chunks


def format_duration(seconds: int) -> str:
    """86400 → 1d, 5400 → 90m: the largest unit that divides it."""
    for unit, length in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % length == 0:
            return f"{seconds // length}{unit}"
    return f"{seconds}s"


def format_retention(max_age_seconds: int | None, max_count: int | None) -> str:
    parts = []
    if max_age_seconds:
        parts.append(format_duration(max_age_seconds))
    if max_count:
        parts.append(f"{max_count:,} msgs")
    return ", ".join(parts) or "forever"


def payload_text(content_type: str, payload: Any) -> str:
    if content_type == "text":
        return " ".join(str(payload).split())
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def format_message(message, *, now: datetime | None = None, width: int | None = None, color: bool = False) -> str:
    """One line for a person: local time (the date unless today), #id, topic, sender, [key], payload.

    `width` (a terminal's) cuts the payload so that the line fits; None keeps it whole.
    """
    moment = message.created_at.astimezone()
    today = moment.date() == (now or datetime.now(UTC)).astimezone().date()
    when = moment.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S")
    parts = [(when, "dim"), (f"#{message.id}", "dim"), (message.topic, "bold"), (message.sender, None)]
    if message.key:
        parts.append((f"[{message.key}]", "cyan"))
    prefix = " ".join(text for text, _ in parts)
    text = payload_text(message.content_type, message.payload)
    if width is not None:
        text = one_line(text, max(20, width - len(prefix) - 3))  # the last column left free: no wrap
    if color:
        styled = " ".join(click.style(part, bold=style == "bold", dim=style == "dim", fg="cyan" if style == "cyan"
                                      else None) for part, style in parts)
        return f"{styled}  {text}"
    return f"{prefix}  {text}"


def memory_path(namespace: str, key: str | None = None) -> str:
    """The URL path of a namespace or a key: segments quoted one by one, `.`/`..` kept as names."""
    if not namespace or "/" in namespace:
        raise click.ClickException(f"namespace {namespace!r} must be a name without '/'; put slashes in the key")
    path = f"{HIVE}/memory/{quote(namespace, safe='')}"
    if key is None:
        return path
    segments = key.split("/")
    if not key or "" in segments:
        raise click.ClickException(f"key {key!r} must not be empty nor hold empty segments (//, or / at an end)")
    # httpx would resolve . and .. as directories; %2E is decoded by the server into the name.
    quoted = [segment.replace(".", "%2E") if segment in (".", "..") else quote(segment, safe="")
              for segment in segments]
    return f"{path}/{'/'.join(quoted)}"


def stale_memory_message(namespace: str, key: str, expected: int, current: Any) -> str:
    if current is None:
        return (f"{namespace}/{key} does not exist (any more), so it is not at version {expected}; "
                "drop --if-version to create it")
    return (f"{namespace}/{key} is at version {current}, not {expected}: someone changed it; look with "
            f"`alai hive mem get {namespace} {key}` and run again with --if-version {current}")


def terminal_width() -> int | None:
    """The terminal's width; None when piped, where lines are kept whole for grep and friends."""
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


def use_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


# -- reading input ------------------------------------------------------------------------------


def read_argument_or_stdin(value: str | None, what: str) -> str:
    """VALUE itself; `-`, or nothing with stdin not a terminal, reads stdin (less its final newline)."""
    if value == "-" or (value is None and not sys.stdin.isatty()):
        text = sys.stdin.read()
        return text[:-1] if text.endswith("\n") else text
    if value is None:
        raise click.UsageError(f"give the {what}, or `-` to read it from stdin")
    return value


def _payload_type(text: bool, json_payload: bool) -> str:
    if text and json_payload:
        raise click.UsageError("--text and --json-payload exclude each other")
    return "text" if text else "json" if json_payload else "auto"


# -- API calls ---------------------------------------------------------------------------------


def _post_retrying_once(client, path: str, body: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """POST with an Idempotency-Key; a lost answer or a restarting server is retried once with the same key."""
    from alai.client import http

    headers = {"Idempotency-Key": idempotency_key}
    try:
        return client.request("POST", path, json=body, headers=headers).json()
    except http.ApiError as error:
        if error.status not in RETRYABLE_STATUSES:
            raise
    except http.ServerUnreachable:
        pass
    time.sleep(1.0)  # the answer may be what was lost: the same key makes this retry safe
    return client.request("POST", path, json=body, headers=headers).json()


def _raise_if_stale(error, namespace: str, key: str, expected: int | None) -> None:
    """A 412 for --if-version becomes a one-line error that says what to do."""
    if error.status == 412 and expected is not None:
        current = (error.problem.model_extra or {}).get("current_version")
        raise click.ClickException(stale_memory_message(namespace, key, expected, current)) from None


# -- commands ------------------------------------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True, help="Print as JSON.")


@click.group()
def hive() -> None:
    """HiveMind: durable publish/subscribe for agents, and their shared memory.

    Topics are dotted names (agents.status); `sub` also takes patterns: `*` for one
    segment, a final `>` for the rest (agents.*, tenders.>). Tables are for people;
    --json is for programs.
    """


@hive.command()
@json_option
@click.pass_context
def topics(ctx: click.Context, as_json: bool) -> None:
    """List topics: message count, last activity (local time), retention, description."""
    from rich.table import Table
    from rich.text import Text

    from alai.wire.hive import Topic

    with client_for(ctx) as client:
        found = [Topic.model_validate(item) for item in client.get_json(f"{HIVE}/topics")]
    if as_json:
        print_json([topic.model_dump(mode="json") for topic in found])
        return
    if not found:
        click.echo("no topics yet; `alai hive pub TOPIC MESSAGE` creates one", err=True)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("TOPIC", no_wrap=True)
    table.add_column("MESSAGES", justify="right", no_wrap=True)
    table.add_column("LAST", no_wrap=True)
    table.add_column("RETENTION", no_wrap=True)
    table.add_column("DESCRIPTION")
    for topic in found:
        table.add_row(Text(topic.name), f"{topic.message_count:,}", local_time(topic.last_message_at),
                      format_retention(topic.retention_max_age_seconds, topic.retention_max_count),
                      Text(one_line(topic.description, 80) if topic.description else "-", no_wrap=True,
                           overflow="ellipsis"))
    _print_table(table)


@hive.command()
@click.argument("topic")
@click.argument("message", required=False)
@click.option("--text", is_flag=True, help="Send it as text, even if it parses as JSON.")
@click.option("--json-payload", is_flag=True, help="Send it as JSON; fail if it is not valid JSON.")
@click.option("--key", help="The message's key (up to 200 characters).")
@click.option("--header", "-H", "headers", multiple=True, metavar="NAME=VALUE", help="A header (repeat for more).")
@click.option("--batch", is_flag=True, help="Publish each line of stdin as one message (NDJSON, or text lines).")
@click.option("--idempotency-key", help="Store it once however often this is run with the same key "
                                        "(default: a new key per run).")
@json_option
@click.pass_context
def pub(ctx: click.Context, topic: str, message: str | None, text: bool, json_payload: bool, key: str | None,
        headers: tuple[str, ...], batch: bool, idempotency_key: str | None, as_json: bool) -> None:
    """Publish MESSAGE to TOPIC and print its id.

    MESSAGE `-`, or no MESSAGE with stdin not a terminal, reads it from stdin. It
    is sent as JSON when it parses as JSON, else as text. The topic is created on
    first use. --json prints the server's answer (ids and stream positions).

    --batch publishes every non-blank line of stdin, in order, by the same rules
    (up to 1,000 per request, each request in one transaction), and prints the ids.
    """
    import uuid

    check_topic(topic)
    as_type = _payload_type(text, json_payload)
    extra: dict[str, Any] = {}
    if key is not None:
        extra["key"] = key
    if headers:
        extra["headers"] = parse_headers(headers)
    run_key = idempotency_key or str(uuid.uuid4())
    if batch:
        if message not in (None, "-"):
            raise click.UsageError("--batch reads the messages from stdin; give no MESSAGE")
        _publish_batch(ctx, topic, sys.stdin.read(), as_type, extra, run_key, as_json)
        return
    body = {**message_body(read_argument_or_stdin(message, "MESSAGE"), as_type), **extra}
    if body.get("text") == "":
        raise click.ClickException("the message is empty; nothing was published")
    with client_for(ctx) as client:
        published = _post_retrying_once(client, f"{HIVE}/topics/{topic}/messages", body, run_key)
    if as_json:
        print_json(published)
    elif sys.stdout.isatty():
        click.echo(f"published #{published['ids'][0]} to {topic}")
    else:
        click.echo(published["ids"][0])


def _publish_batch(ctx: click.Context, topic: str, lines: str, as_type: str, extra: dict[str, Any], run_key: str,
                   as_json: bool) -> None:
    from alai.client import http

    messages = [{**message_body(line, as_type, f"line {number}"), **extra}
                for number, line in enumerate(lines.splitlines(), start=1) if line.strip()]
    if not messages:
        raise click.ClickException("stdin holds no messages (one per line); nothing was published")
    ids: list[int] = []
    positions: list[str] = []
    with client_for(ctx) as client:
        for index, chunk in enumerate(chunk_messages(messages)):
            request_key = run_key if index == 0 else f"{run_key}/{index + 1}"
            try:
                published = _post_retrying_once(client, f"{HIVE}/topics/{topic}/batch", {"messages": chunk},
                                                 request_key)
            except http.ClientError as error:
                if not ids:
                    raise
                raise click.ClickException(f"the first {len(ids)} of {len(messages)} messages were published (up to "
                                           f"#{ids[-1]}), the rest not: {error}") from None
            ids += published["ids"]
            positions += published["positions"]
    if as_json:
        print_json({"topic": topic, "ids": ids, "positions": positions})
    elif sys.stdout.isatty():
        click.echo(f"published {len(ids)} messages to {topic} (#{ids[0]} to #{ids[-1]})")
    else:
        click.echo("\n".join(str(message_id) for message_id in ids))


@hive.command()
@click.argument("topic")
@click.option("--after", "after_id", type=click.IntRange(min=0), metavar="ID",
              help="Only messages after this id (before it with --desc).")
@click.option("--since", type=SinceParam(), help="Only messages since: ISO 8601 (local time) or an age like 2h, 3d.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many.")
@click.option("--desc", is_flag=True, help="Newest first.")
@json_option
@click.pass_context
def history(ctx: click.Context, topic: str, after_id: int | None, since: datetime | None, limit: int, desc: bool,
            as_json: bool) -> None:
    """Stored messages of TOPIC, oldest first: time, id, topic, sender, payload.

    --json prints a JSON array of messages. When more match than --limit, a note on
    stderr says how to read on.
    """
    from alai.wire.hive import MessagePage

    check_topic(topic)
    params: dict[str, Any] = {"order": "desc" if desc else "asc"}
    if since is not None:
        params["since"] = since.isoformat()
    items: list = []
    next_after = after_id
    with client_for(ctx) as client:
        while len(items) < limit:
            page_params = {**params, "limit": min(HISTORY_PAGE, limit - len(items))}
            if next_after is not None:
                page_params["after_id"] = next_after
            page = MessagePage.model_validate(client.get_json(f"{HIVE}/topics/{topic}/messages", params=page_params))
            items += page.items
            next_after = page.next_after_id
            if next_after is None:
                break
    if as_json:
        print_json([item.model_dump(mode="json") for item in items])
    elif items:
        color, width = use_color(), terminal_width()
        for item in items:
            click.echo(format_message(item, width=width, color=color), color=color or None)
    else:
        filtered = after_id is not None or since is not None
        click.echo(f"no messages in {topic}" + (" match --after/--since" if filtered else ""), err=True)
    if next_after is not None:
        click.echo(f"{len(items)} shown; more with --after {next_after}" + (" --desc" if desc else ""), err=True)


# -- shared memory ---------------------------------------------------------------------------------


@hive.group()
def mem() -> None:
    """The agents' shared memory: JSON values by namespace and key, with versions.

    Keys may hold `/` (notes/2026/plan). Every change is also published on the
    topic hive.memory.<namespace>.
    """


@mem.command("get")
@click.argument("namespace")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="The whole entry: value, version, who changed it and when.")
@click.pass_context
def mem_get(ctx: click.Context, namespace: str, key: str, as_json: bool) -> None:
    """Print the value of KEY in NAMESPACE as JSON."""
    path = memory_path(namespace, key)
    with client_for(ctx) as client:
        entry = client.get_json(path)
    print_json(entry if as_json else entry["value"])


@mem.command("set")
@click.argument("namespace")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--text", is_flag=True, help="Store VALUE as a string, even if it parses as JSON.")
@click.option("--if-version", type=int, metavar="N", help="Only if it is still at version N (else nothing changes).")
@json_option
@click.pass_context
def mem_set(ctx: click.Context, namespace: str, key: str, value: str | None, text: bool, if_version: int | None,
            as_json: bool) -> None:
    """Set KEY in NAMESPACE to VALUE: JSON, or else the string as typed.

    VALUE `-`, or no VALUE with stdin not a terminal, reads it from stdin. Prints
    the new version; --if-version refuses to overwrite a change made meanwhile.
    """
    from alai.client import http

    path = memory_path(namespace, key)
    raw = read_argument_or_stdin(value, "VALUE")
    body = message_body(raw, "text" if text else "auto", "the value")
    headers = {"If-Match": f'"{if_version}"'} if if_version is not None else {}
    with client_for(ctx) as client:
        try:
            entry = client.request("PUT", path, json={"value": next(iter(body.values()))}, headers=headers).json()
        except http.ApiError as error:
            _raise_if_stale(error, namespace, key, if_version)
            raise
    if as_json:
        print_json(entry)
    else:
        click.echo(f"{namespace}/{key} version {entry['version']}")


@mem.command("ls")
@click.argument("namespace")
@click.option("--prefix", default="", help="Only keys that start with this.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many.")
@json_option
@click.pass_context
def mem_ls(ctx: click.Context, namespace: str, prefix: str, limit: int, as_json: bool) -> None:
    """List the keys of NAMESPACE (by name) with version, last change and value."""
    from rich.table import Table
    from rich.text import Text

    path = memory_path(namespace)
    entries: list = []
    more = False
    with client_for(ctx) as client:
        while len(entries) < limit:  # pages of up to 1,000, each after the last key of the one before
            want = min(1000, limit - len(entries) + 1)
            params = {"prefix": prefix, "limit": want, **({"after": entries[-1]["key"]} if entries else {})}
            page = client.get_json(path, params=params)
            entries.extend(page)
            if len(page) < want:
                break
        if len(entries) > limit:
            entries, more = entries[:limit], True
    if as_json:
        print_json(entries)
    elif entries:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for name in ("KEY", "VERSION", "UPDATED", "BY"):
            table.add_column(name, no_wrap=True)
        table.add_column("VALUE")
        for entry in entries:
            table.add_row(Text(entry["key"]), str(entry["version"]), local_time(entry["updated_at"]),
                          Text(entry["updated_by"]), Text(payload_text("json", entry["value"]), no_wrap=True,
                                                          overflow="ellipsis"))
        _print_table(table)
    else:
        click.echo(f"no keys in {namespace}" + (f" starting with {prefix!r}" if prefix else ""), err=True)
    if more:
        click.echo(f"{limit} shown; there are more (raise --limit, or narrow --prefix)", err=True)


@mem.command("rm")
@click.argument("namespace")
@click.argument("key")
@click.option("--if-version", type=int, metavar="N", help="Only if it is still at version N.")
@click.pass_context
def mem_rm(ctx: click.Context, namespace: str, key: str, if_version: int | None) -> None:
    """Delete KEY from NAMESPACE."""
    from alai.client import http

    path = memory_path(namespace, key)
    headers = {"If-Match": f'"{if_version}"'} if if_version is not None else {}
    with client_for(ctx) as client:
        try:
            client.request("DELETE", path, headers=headers)
        except http.ApiError as error:
            _raise_if_stale(error, namespace, key, if_version)
            raise
    click.echo(f"deleted {namespace}/{key}")


# `sub` lives in its own module; importing it attaches it to `hive`.
from alai.cli import hive_sub  # noqa: E402,F401
