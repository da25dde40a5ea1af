"""Bitwarden Secrets Manager through the `bws` CLI (see bitwarden.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from alai.server.secrets.backend import Ambiguous, BackendDown, BackendError, Listed, NotFound, ReadOnly
from alai.server.secrets.bitwarden_cli import (
    ID_PREFIX,
    MISS_REFRESH_SECONDS,
    REFRESH_SECONDS,
    RETRY_DOWN_SECONDS,
    _Cli,
    _HoldDown,
    _json,
    _listed,
    _Listing,
    _Output,
    _scrub,
    _when,
    log,
)
from alai.server.secrets.config import MountConfig


def _bws_reason(err: str) -> str:
    """`Error: …` (bws after 1.0); from bws 1.0's report (`Error:`, then `   0: …`, `   1: …`), the first
    cause and the last (the root: "Connection refused"); clap's usage errors start with `error: `."""
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("Error:"):
            if line[len("Error:"):].strip():
                return line[len("Error:"):].strip()
            causes = []
            for cause in lines[index + 1:]:
                match = re.match(r"^\d+:\s*(.+)$", cause)
                if match is None:
                    break
                causes.append(match.group(1))
            if causes:
                return causes[0] if len(causes) == 1 else f"{causes[0]}: {causes[-1]}"
    return lines[0] if lines else "no error message"


def _bws_error(what: str, err: str, secrets: Iterable[str | None]) -> BackendError:
    reason = _scrub(_bws_reason(err), secrets)
    if "[404" in reason or "not found or not accessible" in reason:
        return NotFound(f"{what}: {reason}")
    if "access token" not in reason and any(mark in reason for mark in ("invalid_client", "invalid_grant", "[401")):
        return BackendDown(f"{what}: the access token was refused (revoked or expired?): {reason}")
    return BackendDown(f"{what}: {reason}")


@dataclass(frozen=True)
class _Secret:
    id: str
    key: str
    updated_at: datetime | None


class BwsBackend:
    kind = "bws"

    def __init__(self, config: MountConfig, *, refresh_seconds: float = REFRESH_SECONDS,
                 miss_refresh_seconds: float = MISS_REFRESH_SECONDS, retry_down_seconds: float = RETRY_DOWN_SECONDS,
                 ) -> None:
        self.read_only = config.read_only or config.project_id is None
        self._project = config.project_id
        self._token = config.access_token.get_secret_value() if config.access_token else None
        self._server = config.server_url
        self._cli = _Cli("bws", config.binary or "bws", config.timeout_seconds)
        self._listing = _Listing(refresh_seconds, miss_refresh_seconds)
        self._hold_down = _HoldDown(retry_down_seconds)
        self._keys: dict[str, list[_Secret]] = {}
        self._lock = asyncio.Lock()

    async def _bws(self, *args: str, after: Sequence[str] = (), value: str | None = None) -> _Output:
        """`after` follows `--`: positional arguments that may start with a dash."""
        if not self._token:
            raise BackendDown("bws: no access token is configured (access_token)")
        argv = [*args, "--output", "json", *(["--server-url", self._server] if self._server else [])]
        output = await self._cli.run([*argv, *(["--", *after] if after else [])],
                                     env={"BWS_ACCESS_TOKEN": self._token, "NO_COLOR": "1"})
        if output.code != 0:
            raise _bws_error(f"bws {args[0]} {args[1]}", output.err, (self._token, value))
        return output

    async def _refresh(self) -> None:
        try:
            output = await self._bws("secret", "list", *([self._project] if self._project else []))
        except NotFound as error:  # the project itself: a configuration error, not a missing secret
            raise BackendDown(f"{error} (is project_id right?)") from None
        secrets = _json(output, "bws secret list")
        if not isinstance(secrets, list):
            raise BackendDown("bws secret list: the answer is not a list")
        keys: dict[str, list[_Secret]] = {}
        for secret in secrets:  # only key → id is kept: values are fetched by id when asked for
            if isinstance(secret, dict) and isinstance(secret.get("id"), str) and isinstance(secret.get("key"), str):
                entry = _Secret(secret["id"].lower(), secret["key"], _when(secret.get("revisionDate")))
                keys.setdefault(entry.key, []).append(entry)
        self._keys = keys
        self._listing.done()
        log.debug("bws listing refreshed", secrets=len(secrets))

    def _find(self, path: str) -> _Secret | None:
        if path.startswith(ID_PREFIX):
            wanted = path[len(ID_PREFIX):].lower()
            return next((entry for entries in self._keys.values() for entry in entries if entry.id == wanted), None)
        entries = self._keys.get(path, [])
        if len(entries) > 1:
            raise Ambiguous(f"{len(entries)} secrets have the key {path}: "
                            f"{', '.join(entry.id for entry in entries)} (address one as {ID_PREFIX}<id>)")
        return entries[0] if entries else None

    async def _entry(self, path: str) -> _Secret:
        async with self._lock:
            found = await self._listing.lookup(self._refresh, lambda: self._find(path))
        if found is None:
            raise NotFound(f"bws: no secret has the key {path}")
        return found

    async def get(self, path: str) -> str:
        with self._hold_down.guard():
            for _ in range(2):
                entry = await self._entry(path)
                try:
                    secret = _json(await self._bws("secret", "get", entry.id), "bws secret get")
                except NotFound:
                    secret = None
                if isinstance(secret, dict) and (path.startswith(ID_PREFIX) or secret.get("key") == path):
                    if not isinstance(secret.get("value"), str):
                        raise BackendDown("bws secret get: the answer holds no value")
                    return secret["value"]
                self._listing.at = None  # deleted or renamed since the listing: list again, once
            raise NotFound(f"bws: no secret has the key {path}")

    async def put(self, path: str, value: str, *, actor: str) -> None:
        if self.read_only:
            raise ReadOnly("bws: read-only (writing needs project_id)")
        if "\x00" in value:  # it goes through a command line
            raise BackendError("bws: a value cannot hold a NUL character")
        with self._hold_down.guard():
            async with self._lock:
                if self._listing.due():
                    await self._refresh()
                entry = self._find(path)
                if entry is None and not path.startswith(ID_PREFIX):
                    await self._refresh()  # made elsewhere since the listing? Then edit it, never duplicate it
                    entry = self._find(path)
                if entry is None and path.startswith(ID_PREFIX):
                    raise NotFound(f"bws: no secret has the id {path[len(ID_PREFIX):]}")
                if entry is None:
                    output = await self._bws("secret", "create", f"--note=written through alai by {actor}",
                                             after=(path, value, self._project or ""), value=value)
                else:
                    output = await self._bws("secret", "edit", entry.id, f"--value={value}", value=value)
                secret = _json(output, "bws secret")
                if isinstance(secret, dict) and isinstance(secret.get("id"), str):
                    written = _Secret(secret["id"].lower(), str(secret.get("key", path)),
                                      _when(secret.get("revisionDate")))
                    self._forget(written.id)
                    self._keys.setdefault(written.key, []).append(written)
        log.info("bws secret written", path=path, actor=actor, created=entry is None)

    def _forget(self, ident: str) -> None:
        for key in list(self._keys):
            self._keys[key] = [known for known in self._keys[key] if known.id != ident]
            if not self._keys[key]:
                del self._keys[key]

    async def delete(self, path: str) -> None:
        if self.read_only:
            raise ReadOnly("bws: read-only (deleting needs project_id)")
        with self._hold_down.guard():
            entry = await self._entry(path)
            await self._bws("secret", "delete", entry.id)
            async with self._lock:
                self._forget(entry.id)

    async def list(self, prefix: str) -> list[Listed]:
        with self._hold_down.guard():
            async with self._lock:
                if self._listing.due():
                    await self._refresh()
                names = {key: [(entry.id, entry.updated_at) for entry in entries]
                         for key, entries in self._keys.items()}
        return _listed(names, prefix)

    async def check(self) -> str | None:
        try:
            with self._hold_down.guard(force=True):
                async with self._lock:
                    await self._refresh()
        except BackendError as error:
            return str(error)
        return None

    async def close(self) -> None:
        self._cli.close()
