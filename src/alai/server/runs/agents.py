"""Agent definitions: Markdown with YAML front matter, as Claude Code reads them from
~/.claude/agents/, registered through the API or loaded from a directory; versioned.

A PUT with the same text as the current version changes nothing (no new version),
so loading a directory at every start-up is harmless. Runs keep the version they
were made with.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from alai.server.problems import ProblemError
from alai.wire.problem import FieldError
from alai.wire.runs import (
    AGENT_NAME_PATTERN,
    DEFINITION_MAX_BYTES,
    MAX_ATTEMPTS_LIMIT,
    TIMEOUT_MAX_SECONDS,
    TIMEOUT_MIN_SECONDS,
    Agent,
)

_NAME = re.compile(AGENT_NAME_PATTERN)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h)?\s*$")
COLUMNS = ("v.name, v.version, v.definition, v.front_matter, v.system_prompt, v.created_at AS updated_at, "
           "v.created_by AS updated_by")


def _invalid(message: str, field: str = "definition") -> ProblemError:
    return ProblemError(422, message, slug="bad-agent-definition",
                        errors=[FieldError(field=f"body.{field}", message=message)])


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ProblemError(422, f"{name!r} is not an agent name: letters, digits, _ and -, at most 64, "
                                "starting with a letter or digit", slug="bad-agent-name")
    return name


def _seconds(value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise _invalid(f"{field} must be a number of seconds or a duration like 90s, 10m, 2h", field)
    if isinstance(value, int):
        seconds = value
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise _invalid(f"{field} must be a number of seconds or a duration like 90s, 10m, 2h", field)
        seconds = int(match[1]) * {"s": 1, "m": 60, "h": 3600, None: 1}[match[2]]
    if not TIMEOUT_MIN_SECONDS <= seconds <= TIMEOUT_MAX_SECONDS:
        raise _invalid(f"{field} must be between {TIMEOUT_MIN_SECONDS} s and {TIMEOUT_MAX_SECONDS // 3600} h", field)
    return seconds


def parse(definition: str) -> tuple[dict[str, Any], str]:
    """(front matter, system prompt) of a definition; 422 when it cannot be read."""
    if len(definition.encode()) > DEFINITION_MAX_BYTES:
        raise ProblemError(413, f"an agent definition may hold at most {DEFINITION_MAX_BYTES // 1024} KiB",
                           slug="payload-too-large")
    match = _FRONT_MATTER.match(definition.lstrip("\ufeff"))
    if match is None:
        return {}, definition.strip()
    try:
        front = yaml.safe_load(match[1]) or {}
    except yaml.YAMLError as error:
        raise _invalid(f"the front matter is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(front, dict):
        raise _invalid("the front matter must be a YAML mapping (name: …, model: …)")
    return front, definition[match.end():].strip()


def describe(name: str, version: int, definition: str, front: dict[str, Any], prompt: str,
             updated_at: datetime, updated_by: str) -> Agent:
    """The agent a definition describes; 422 for fields alai cannot use."""
    tools = front.get("tools") or []
    if isinstance(tools, str):
        tools = [tool.strip() for tool in tools.split(",") if tool.strip()]
    if not isinstance(tools, list) or not all(isinstance(tool, str) for tool in tools):
        raise _invalid("tools must be a list of names or a comma-separated string", "tools")
    executor = front.get("executor", "llm")
    if executor not in ("llm", "command"):
        raise _invalid("executor must be llm or command", "executor")
    command = front.get("command")
    if executor == "command" and (not isinstance(command, str) or not _NAME.match(command)):
        raise _invalid("an agent with executor: command names the command a worker offers (command: claude)",
                       "command")
    model = front.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip() or len(model) > 200):
        raise _invalid("model must be a model name", "model")
    max_attempts = front.get("max_attempts")
    if max_attempts is not None and (isinstance(max_attempts, bool) or not isinstance(max_attempts, int)
                                     or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT):
        raise _invalid(f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}", "max_attempts")
    secrets, env = _secrets(front)
    description = front.get("description")
    return Agent(
        name=name, version=version, description=str(description) if description is not None else None,
        model=model.strip() if isinstance(model, str) else None, tools=tools, executor=executor,
        command=command if executor == "command" else None,
        timeout_seconds=_seconds(front["timeout"], "timeout") if front.get("timeout") is not None else None,
        max_attempts=max_attempts, secrets=secrets, env=env, front_matter=front, system_prompt=prompt, definition=definition,
        updated_at=updated_at, updated_by=updated_by,
    )


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SECRET_GLOB = re.compile(r"^[A-Za-z0-9._:*?/-]{1,300}$")


def _secrets(front: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """`secrets:` (paths or globs the runs may read) and `env:` (NAME: secret://path)."""
    listed = front.get("secrets") or []
    if isinstance(listed, str):
        listed = [part.strip() for part in listed.split(",") if part.strip()]
    if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
        raise _invalid("secrets must be a list of secret paths or globs (together/*)", "secrets")
    paths = [item.removeprefix("secret://") for item in listed]
    env = front.get("env") or {}
    if not isinstance(env, dict):
        raise _invalid("env must map variable names to secret://path references", "env")
    for name, reference in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise _invalid(f"{name!r} is not an environment variable name", "env")
        if not isinstance(reference, str) or not reference.startswith("secret://"):
            raise _invalid(f"env {name} must be a secret://path reference (plain values belong in the prompt)", "env")
        paths.append(reference.removeprefix("secret://"))
    for path in paths:
        if not _SECRET_GLOB.match(path):
            raise _invalid(f"{path!r} is not a secret path or glob", "secrets")
    return sorted(set(paths)), {str(k): str(v) for k, v in env.items()}


def _from_row(row: dict[str, Any]) -> Agent:
    return describe(row["name"], row["version"], row["definition"], row["front_matter"], row["system_prompt"],
                    row["updated_at"], row["updated_by"])


async def put(conn: AsyncConnection, *, name: str, definition: str, actor: str) -> tuple[Agent, bool]:
    """Registers `definition` as the agent's next version; (agent, changed). Call in a transaction."""
    check_name(name)
    front, prompt = parse(definition)
    declared = front.get("name")
    if declared is not None and str(declared) != name:
        raise _invalid(f"the front matter names the agent {declared!r}, but it is being saved as {name!r}", "name")
    probe = describe(name, 1, definition, front, prompt, datetime.now(), actor)  # validates before writing
    row = await (await conn.execute(
        "INSERT INTO run_agents (name, version) VALUES (%s, 0) ON CONFLICT (name) DO UPDATE SET name = excluded.name "
        "RETURNING version, deleted_at", (name,))).fetchone()  # locks the agent's row: one writer at a time
    if row["version"] > 0 and row["deleted_at"] is None:
        current = await get(conn, name=name)
        if current.definition == definition:
            return current, False
    version = row["version"] + 1
    await conn.execute(
        "INSERT INTO run_agent_versions (name, version, definition, front_matter, system_prompt, created_by) "
        "VALUES (%s, %s, %s, %s, %s, %s)", (name, version, definition, Jsonb(probe.front_matter), prompt, actor))
    await conn.execute("UPDATE run_agents SET version = %s, deleted_at = NULL WHERE name = %s", (version, name))
    return await get(conn, name=name), True


async def get(conn: AsyncConnection, *, name: str, version: int | None = None) -> Agent:
    if version is None:
        row = await (await conn.execute(
            f"SELECT {COLUMNS} FROM run_agents a JOIN run_agent_versions v ON v.name = a.name AND v.version = a.version "
            "WHERE a.name = %s AND a.deleted_at IS NULL", (name,))).fetchone()
    else:
        row = await (await conn.execute(
            f"SELECT {COLUMNS} FROM run_agent_versions v WHERE v.name = %s AND v.version = %s",
            (name, version))).fetchone()
    if row is None:
        what = f"agent {name!r}" + (f" has no version {version}" if version is not None else " is not registered")
        raise ProblemError(404, f"{what}; `alai agent ls` lists the agents", slug="unknown-agent")
    return _from_row(row)


async def list_all(conn: AsyncConnection) -> list[Agent]:
    rows = await (await conn.execute(
        f"SELECT {COLUMNS} FROM run_agents a JOIN run_agent_versions v ON v.name = a.name AND v.version = a.version "
        "WHERE a.deleted_at IS NULL ORDER BY a.name")).fetchall()
    return [_from_row(row) for row in rows]


async def delete(conn: AsyncConnection, *, name: str) -> None:
    result = await conn.execute("UPDATE run_agents SET deleted_at = now() WHERE name = %s AND deleted_at IS NULL",
                                (name,))
    if result.rowcount == 0:
        raise ProblemError(404, f"agent {name!r} is not registered", slug="unknown-agent")


def definitions_in(directory: Path) -> list[tuple[str, str]]:
    """(name, text) of every *.md in a directory: the name from the front matter, else the file's stem."""
    found = []
    for path in sorted(directory.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        front, _ = parse(text)
        found.append((str(front.get("name") or path.stem), text))
    return found
