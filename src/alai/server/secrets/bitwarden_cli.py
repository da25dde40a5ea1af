"""What the Bitwarden backends share: running their CLI (no shell, a minimal
environment, credentials by environment, a timeout), scrubbing its messages of
credentials and values, cached listings, and holding off a backend that is down.
See bitwarden.py for the backends themselves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from alai.server.secrets.backend import BackendDown, BackendError, Listed
from alai.wire.secrets import PATH_PATTERN

log = structlog.get_logger("alai.secrets.bitwarden")

ID_PREFIX = "id:"
REFRESH_SECONDS = 60.0
MISS_REFRESH_SECONDS = 5.0
RETRY_DOWN_SECONDS = 5.0
# What a CLI gets from the server's environment; everything else it needs is set per call.
PASSED_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                      "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "BITWARDENCLI_APPDATA_DIR",
                      "BWS_CONFIG_FILE", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR",
                      "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")
_PATH = re.compile(PATH_PATTERN)
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")
_NODE_NOISE = re.compile(r"^\((node|Use `node)[:\s]")  # Node's deprecation warnings on bw's stderr
MESSAGE_MAX = 300


# -- running a CLI --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Output:
    code: int
    out: str
    err: str


class _Cli:
    def __init__(self, name: str, binary: str, timeout: float) -> None:
        self.name, self.binary, self.timeout = name, binary, timeout
        self._running: set[asyncio.subprocess.Process] = set()

    async def run(self, args: Sequence[str], *, env: dict[str, str] | None = None, stdin: bytes | None = None,
                  timeout: float | None = None) -> _Output:
        environment = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
        environment.update(env or {})
        # the command words only: later arguments may be values
        what = " ".join([self.name, *(word for word in args[:2] if not word.startswith("-"))])
        try:
            process = await asyncio.create_subprocess_exec(
                self.binary, *args, env=environment, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE)
        except FileNotFoundError:
            raise BackendDown(f"{self.name}: {self.binary!r} was not found (install it or set `binary`)") from None
        except OSError as error:
            raise BackendDown(f"{self.name}: cannot run {self.binary!r}: {error.strerror or error}") from None
        self._running.add(process)
        try:
            out, err = await asyncio.wait_for(process.communicate(stdin), timeout or self.timeout)
        except TimeoutError:
            raise BackendDown(f"{what}: no answer within {timeout or self.timeout:g} s") from None
        finally:
            self._running.discard(process)
            if process.returncode is None:  # timed out or cancelled: never leave it running
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        return _Output(process.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def close(self) -> None:
        for process in list(self._running):
            with contextlib.suppress(ProcessLookupError):
                process.kill()


def _scrub(text: str, secrets: Iterable[str | None]) -> str:
    """One line for people: no credential or value, however the CLI came to print it."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
        for part in secret.splitlines():
            if len(part) >= 4:
                text = text.replace(part, "***")
    line = " ".join(text.split())
    return line if len(line) <= MESSAGE_MAX else line[:MESSAGE_MAX - 1] + "…"


def _when(text: object) -> datetime | None:
    """bws (chrono: up to 9 fractional digits) and bw (JavaScript: 3) timestamps."""
    match = _TIMESTAMP.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    fraction = (match.group(2) or "").ljust(6, "0")[:6]
    zone = match.group(3) or "Z"
    return datetime.fromisoformat(f"{match.group(1)}.{fraction}{'+00:00' if zone == 'Z' else zone}")


def _json(output: _Output, what: str) -> object:
    try:
        return json.loads(output.out)
    except ValueError:
        raise BackendDown(f"{what}: the answer is not JSON") from None


def _listed(names: dict[str, list[tuple[str, datetime | None]]], prefix: str) -> list[Listed]:
    """A unique name that is a path lists as itself; a shared or odd one as `id:<uuid>` per entry."""
    out = []
    for name, entries in names.items():
        if len(entries) == 1 and _PATH.match(name):
            out.append(Listed(path=name, updated_at=entries[0][1]))
        else:
            out.extend(Listed(path=f"{ID_PREFIX}{ident}", updated_at=when) for ident, when in entries)
    return sorted((item for item in out if item.path.startswith(prefix)), key=lambda item: item.path)


class _HoldDown:
    """After BackendDown, the same answer for `seconds` without running the CLI: in an outage each read
    would otherwise wait for its own failure, up to timeout_seconds, one after another for bw."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._reason: str | None = None
        self._at = 0.0

    @contextlib.contextmanager
    def guard(self, *, force: bool = False):
        """`force`: try anyway (a health check is how the end of an outage is seen)."""
        if not force and self._reason is not None and time.monotonic() - self._at < self.seconds:
            raise BackendDown(f"{self._reason} (tried {time.monotonic() - self._at:.0f} s ago)")
        try:
            yield
        except BackendDown as error:
            self._reason, self._at = str(error), time.monotonic()
            raise
        except BackendError:  # it answered
            self._reason = None
            raise
        self._reason = None


class _Listing:
    """When a cached listing is due again: every `every` seconds, or on a miss after `miss_every`."""

    def __init__(self, every: float, miss_every: float) -> None:
        self.every, self.miss_every = every, miss_every
        self.at: float | None = None

    def due(self) -> bool:
        return self.at is None or time.monotonic() - self.at >= self.every

    def due_for_miss(self) -> bool:
        return self.at is None or time.monotonic() - self.at >= self.miss_every

    def done(self) -> None:
        self.at = time.monotonic()

    async def lookup(self, refresh, find):
        """`find()` in a listing fresh enough: `refresh()`ed when due, and once more on a miss."""
        if self.due():
            await refresh()
        found = find()
        if found is None and self.due_for_miss():
            await refresh()
            found = find()
        return found
