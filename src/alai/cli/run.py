"""`alai run -- CMD ARGS…`: a command with secrets in its environment, their values masked in its output.

Where the variables come from, later ones winning: the inherited environment, the env
file(s), then `ALAI_SECRET_<NAME>=path` mappings (which set NAME and are themselves
removed). Every `secret://` reference is resolved in one call to the control plane —
all or nothing, so a denied or missing secret stops here and the command never starts.

The child's stdout and stderr go through pipes and a `Masker` each, then to ours; with
--no-masking it writes to our descriptors directly. Its exit status is ours (128+N when
a signal N killed it). SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to `alai run` are
passed on; so is SIGINT, except when we are the terminal's foreground process group:
then Ctrl-C has already reached the child, which shares our group, and a second one
would cut its clean-up short.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from alai.cli.output import client_for
from alai.wire.secret_paths import REFERENCE_PREFIX

DEFAULT_ENV_FILE = ".alai.env"
MAPPING_PREFIX = "ALAI_SECRET_"
RESOLVE_MAX = 200  # the API's limit per call
FORWARDED_SIGNALS = ("SIGTERM", "SIGHUP", "SIGINT", "SIGUSR1", "SIGUSR2")
READ_SIZE = 65536

# -- the env file (pure: tests/e2e/test_secrets_cli.py) ------------------------------------------

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


class EnvFileError(ValueError):
    pass


@dataclass
class Environment:
    plain: dict[str, str] = field(default_factory=dict)  # NAME → value
    references: dict[str, str] = field(default_factory=dict)  # NAME → secret path
    sources: dict[str, str] = field(default_factory=dict)  # NAME → where it was set (for errors)

    def set(self, name: str, value: str, where: str) -> None:
        self.plain.pop(name, None)
        self.references.pop(name, None)
        if value.startswith(REFERENCE_PREFIX):
            self.references[name] = value.removeprefix(REFERENCE_PREFIX)
        else:
            self.plain[name] = value
        self.sources[name] = where


def parse_env_file(text: str, source: str = "the env file") -> list[tuple[str, str, int]]:
    """(NAME, value, line number) for each assignment of a dotenv-style file.

    `NAME=value`, `export NAME=value`; blank lines and `# comments`; a value may be
    'single-quoted' (literal) or "double-quoted" (\\n \\t \\" \\\\ escapes), either
    spanning lines; unquoted, it ends at ` #`. Nothing is expanded ($VAR stays as is).
    """
    lines = text.splitlines()
    found: list[tuple[str, str, int]] = []
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        name, equals, rest = line.partition("=")
        name = name.strip()
        if not equals or not _NAME.match(name):
            raise EnvFileError(f"{source}:{number}: expected NAME=VALUE, got {_shorten(line)!r}")
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            quote = rest[0]
            body = rest[1:]
            while _closing_quote(body, quote) < 0:
                if index >= len(lines):
                    raise EnvFileError(f"{source}:{number}: the {quote} quote of {name} is never closed")
                body += "\n" + lines[index]
                index += 1
            end = _closing_quote(body, quote)
            after = body[end + 1:].strip()
            if after and not after.startswith("#"):
                raise EnvFileError(f"{source}:{number}: unexpected text after the closing quote of {name}")
            value = body[:end] if quote == "'" else _unescape(body[:end])
        else:
            value = re.split(r"\s#", rest, maxsplit=1)[0].strip()
        found.append((name, value, number))
    return found


def _closing_quote(body: str, quote: str) -> int:
    position = 0
    while position < len(body):
        if body[position] == "\\" and quote == '"':
            position += 2
            continue
        if body[position] == quote:
            return position
        position += 1
    return -1


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda match: _ESCAPES.get(match[1], match[0]), text, flags=re.DOTALL)


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def collect(env_files: Iterable[tuple[str, str]], environ: dict[str, str]) -> Environment:
    """The variables to set: from the env files' (name, text), then ALAI_SECRET_* in `environ`."""
    result = Environment()
    for source, text in env_files:
        for name, value, number in parse_env_file(text, source):
            result.set(name, value, f"{source}:{number}")
    for variable, value in sorted(environ.items()):
        if not variable.startswith(MAPPING_PREFIX):
            continue
        name = variable.removeprefix(MAPPING_PREFIX)
        if not _NAME.match(name):
            raise EnvFileError(f"{variable}: the name after {MAPPING_PREFIX} is not a variable name")
        if not value.strip():
            raise EnvFileError(f"{variable} is empty: give a secret path (together/api-key)")
        value = value.strip()
        result.set(name, value if value.startswith(REFERENCE_PREFIX) else REFERENCE_PREFIX + value, variable)
    return result


def child_environment(environ: dict[str, str], wanted: Environment, values: dict[str, str]) -> dict[str, str]:
    """The inherited environment less the ALAI_SECRET_* mappings, plus the plain and resolved variables."""
    env = {name: value for name, value in environ.items() if not name.startswith(MAPPING_PREFIX)}
    env.update(wanted.plain)
    env.update({name: values[path] for name, path in wanted.references.items()})
    return env


# -- running the command ---------------------------------------------------------------------------


class CommandNotRun(click.ClickException):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--env-file", "env_files", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help=f"Variables to set, secret:// references among them (default: {DEFAULT_ENV_FILE} if it exists; "
                   "repeat for more, later files win).")
@click.option("--no-masking", is_flag=True, help="Let the command write to the terminal directly, values unmasked.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, env_files: tuple[Path, ...], no_masking: bool, command: tuple[str, ...]) -> None:
    """Run COMMAND with secrets in its environment: alai run -- CMD ARGS…

    \b
    The env file holds NAME=VALUE lines (`export`, quotes and # comments allowed);
    a VALUE secret://together/api-key is replaced by the secret's value:
        TOGETHER_API_KEY=secret://together/api-key
        MODEL=llama3
    ALAI_SECRET_<NAME>=together/api-key in the environment sets NAME the same way.
    All references are resolved in one call; if any is missing or denied, the
    command is not run.

    Any secret value (of 4 characters or more) that the command writes to stdout or
    stderr is shown as ***** — also when it is split across writes. --no-masking
    turns that off. The exit status is the command's (128+N if signal N killed it);
    127 when it cannot be found. SIGTERM, SIGHUP and SIGINT are passed on to it.
    """
    wanted = _collect_or_fail(env_files)
    values, stale = _resolve(ctx, sorted(set(wanted.references.values())), command[0]) if wanted.references \
        else ({}, [])
    for path in stale:
        click.echo(f"warning: {REFERENCE_PREFIX}{path} is stale: its backend cannot be reached, so its cached value "
                   "is used", err=True)
    for name, path in wanted.references.items():
        if "\x00" in values[path]:  # the OS cannot pass it: say which, rather than fail in Popen
            raise click.ClickException(f"{REFERENCE_PREFIX}{path} holds a NUL character, which an environment "
                                       f"variable ({name}) cannot; {command[0]} was not run")
    env = child_environment(dict(os.environ), wanted, values)
    secret_values = [] if no_masking else [values[path] for path in wanted.references.values()]
    ctx.exit(run_command(list(command), env, secret_values, mask=not no_masking))


def _collect_or_fail(env_files: tuple[Path, ...]) -> Environment:
    files = list(env_files)
    if not files and Path(DEFAULT_ENV_FILE).is_file():
        files = [Path(DEFAULT_ENV_FILE)]
    texts = []
    for path in files:
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise click.ClickException(f"the env file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
            raise click.ClickException(f"cannot read the env file {path}: {reason}") from None
    try:
        wanted = collect(texts, dict(os.environ))
    except EnvFileError as error:
        raise click.ClickException(str(error)) from None
    from alai.cli.secrets import secret_path

    for name, path in wanted.references.items():
        try:
            secret_path(path)
        except click.ClickException:
            raise click.ClickException(f"{wanted.sources[name]}: {name}={REFERENCE_PREFIX}{path} is not a secret "
                                       "path (together/api-key)") from None
    return wanted


def _resolve(ctx: click.Context, paths: list[str], program: str) -> tuple[dict[str, str], list[str]]:
    """path → value for every path, in one call (all or nothing); and which values are stale."""
    from alai.client import http

    if len(paths) > RESOLVE_MAX:
        raise click.ClickException(f"{len(paths)} secrets are referenced; at most {RESOLVE_MAX} can be resolved at once")
    references = [REFERENCE_PREFIX + path for path in paths]
    with client_for(ctx) as client:
        try:
            # A plain dict, not the wire model: pydantic would cost this command 0.1 s to import.
            answer = client.request("POST", "/v1/secrets/resolve", json={"references": references}).json()
            values, stale_references = dict(answer["values"]), list(answer.get("stale") or [])
        except http.ClientError as error:
            raise click.ClickException(f"{error}; {program} was not run") from None
    missing = [reference for reference in references if reference not in values]
    if missing:  # the server answers all or nothing; this would be its bug, but never run half-configured
        raise click.ClickException(f"the control plane gave no value for {missing[0]}; {program} was not run")
    stale = {reference.removeprefix(REFERENCE_PREFIX) for reference in stale_references}
    return ({reference.removeprefix(REFERENCE_PREFIX): values[reference] for reference in references},
            sorted(stale))


def run_command(command: list[str], env: dict[str, str], secret_values: list[str], *, mask: bool) -> int:
    """Runs it to the end and returns the exit status to give (the child's; 128+N for signal N)."""
    import subprocess

    pipe = subprocess.PIPE if mask else None
    forwarder = _SignalForwarder()  # before the child starts: a signal in between is passed on, not lost
    previous = forwarder.install()
    try:
        try:
            child = subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe)
        except FileNotFoundError:
            raise CommandNotRun(f"command not found: {command[0]}", 127) from None
        except PermissionError:
            raise CommandNotRun(f"cannot execute {command[0]}: permission denied", 126) from None
        except OSError as error:
            raise CommandNotRun(f"cannot run {command[0]}: {error.strerror or error}", 126) from None
        except ValueError as error:  # e.g. a NUL character in the environment or the arguments
            raise CommandNotRun(f"cannot run {command[0]}: {error}", 126) from None
        forwarder.attach(child)
        pumps = []
        if mask:
            assert child.stdout is not None and child.stderr is not None
            pumps = [_start_pump(child.stdout, sys.stdout, secret_values),
                     _start_pump(child.stderr, sys.stderr, secret_values)]
        status = child.wait()
        for pump in pumps:
            pump.join()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - status if status < 0 else status


class _SignalForwarder:
    def __init__(self) -> None:
        self.child: Any = None
        self.early: list[int] = []  # received before the child existed

    def install(self) -> dict[int, Any]:
        """Handlers for the forwarded signals; returns the previous ones."""
        previous = {}
        for name in FORWARDED_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                previous[number] = signal.signal(number, self._received)
        return previous

    def attach(self, child: Any) -> None:
        self.child = child
        for number in self.early:
            self._send(number)

    def _received(self, number: int, _frame: Any) -> None:
        if number == signal.SIGINT and _terminal_delivered_it():
            return
        if self.child is None:
            self.early.append(number)
        else:
            self._send(number)

    def _send(self, number: int) -> None:
        try:
            self.child.send_signal(number)
        except ProcessLookupError:  # it has just ended
            pass


def _terminal_delivered_it() -> bool:
    """Whether a SIGINT came from the terminal (Ctrl-C), which sends it to our whole process group."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | getattr(os, "O_NOCTTY", 0))
    except OSError:  # no controlling terminal: it was sent with kill()
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _start_pump(source: IO[bytes], target: IO[str] | None, secret_values: list[str]) -> threading.Thread:
    thread = threading.Thread(target=_pump, args=(source, target, secret_values), daemon=True,
                              name="alai-run-output")
    thread.start()
    return thread


def _pump(source: IO[bytes], target: IO[str] | None, secret_values: list[str]) -> None:
    """Copies the child's stream to ours through a Masker, each chunk as soon as it is read."""
    from alai.client.masking import Masker

    masker = Masker(secret_values)
    fd = source.fileno()
    out = getattr(target, "buffer", None)  # None: our own stream is closed, so the output goes nowhere
    try:
        while True:
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                break
            _write(out, masker.feed(chunk))
        _write(out, masker.finish())
    except OSError:
        # Our reader has gone (`alai run … | head`) or the terminal with it: closing the
        # pipe gives the child the SIGPIPE it would have had; later writes to the dead
        # stream would only add noise.
        if target is not None:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, target.fileno())
            os.close(devnull)
    finally:
        source.close()


def _write(out: IO[bytes] | None, data: bytes) -> None:
    if data and out is not None:
        out.write(data)
        out.flush()
