"""The Bitwarden password manager through the `bw` CLI (see bitwarden.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from alai.server.secrets.backend import Ambiguous, BackendDown, BackendError, Listed, NotFound, ReadOnly
from alai.server.secrets.bitwarden_cli import (
    _NODE_NOISE,
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

SESSION_LOST = ("You are not logged in.", "Vault is locked.")
MORE_THAN_ONE = "More than one result was found"
BUILT_IN_FIELDS = ("username", "password", "notes", "totp")
LOGIN, SECURE_NOTE = 1, 2  # item types
LINKED_FIELD = 3  # a custom field that shows a login field: linkedId 100 is the username, 101 the password
LINKED_TO = {100: "username", 101: "password"}
DEFAULT_SERVER = "https://vault.bitwarden.com"


def _bw_reason(err: str, secrets: Iterable[str | None]) -> str:
    lines = [line.strip() for line in err.splitlines() if line.strip() and not _NODE_NOISE.match(line.strip())]
    return _scrub(" ".join(lines) if lines else "no error message", secrets)


def _server(url: str | None) -> str:
    """bw's `serverUrl` is null for bitwarden.com, and `bw config server bitwarden.com` means the same."""
    url = (url or "").rstrip("/")
    return DEFAULT_SERVER if url in ("", "bitwarden.com", "https://bitwarden.com") else url


def _encode(item: dict) -> bytes:
    return base64.b64encode(json.dumps(item, ensure_ascii=False).encode())


def _field_value(item: dict, field: str | None) -> str:
    login = item.get("login") or {}
    what = field or ("notes" if item.get("type") == SECURE_NOTE else "password")
    if what == "notes":
        value = item.get("notes")
    elif what in BUILT_IN_FIELDS:
        value = login.get(what)
    else:
        matches = [entry for entry in item.get("fields") or [] if entry.get("name") == field]
        if len(matches) > 1:
            raise Ambiguous(f"the item {item['id']} has {len(matches)} fields named {field}")
        if not matches:
            raise NotFound(f"bw: the item {item['id']} has no field {field}")
        value = matches[0].get("value")
        if matches[0].get("type") == LINKED_FIELD:
            value = login.get(LINKED_TO.get(matches[0].get("linkedId"), ""))
    if not isinstance(value, str) or value == "":
        raise NotFound(f"bw: the item {item['id']} has no {what}")
    return value


def _with_value(item: dict, field: str | None, value: str) -> dict:
    updated = copy.deepcopy(item)
    kind = updated.get("type")
    if (field is None and kind == SECURE_NOTE) or field == "notes":
        updated["notes"] = value
    elif field is None or field in BUILT_IN_FIELDS:
        if kind != LOGIN:
            raise ReadOnly(f"bw: the item {item['id']} is not a login: write one of its custom fields")
        updated["login"] = {**(updated.get("login") or {}), field or "password": value}
    else:
        fields = updated.get("fields") or []
        matches = [entry for entry in fields if entry.get("name") == field]
        if len(matches) > 1:
            raise Ambiguous(f"the item {item['id']} has {len(matches)} fields named {field}")
        if matches and matches[0].get("type") == LINKED_FIELD:
            raise ReadOnly(f"bw: the field {field} of the item {item['id']} shows another field: write that one")
        if matches:
            matches[0]["value"] = value
        else:
            fields.append({"name": field, "value": value, "type": 1, "linkedId": None})  # type 1: hidden
        updated["fields"] = fields
    return updated


def _new_login(name: str, value: str) -> dict:
    return {"organizationId": None, "collectionIds": None, "folderId": None, "type": LOGIN, "name": name,
            "notes": None, "favorite": False, "fields": [], "reprompt": 0, "secureNote": None, "card": None,
            "identity": None, "login": {"uris": [], "username": None, "password": value, "totp": None}}


class BwBackend:
    kind = "bw"

    def __init__(self, config: MountConfig, *, refresh_seconds: float = REFRESH_SECONDS,
                 miss_refresh_seconds: float = MISS_REFRESH_SECONDS, retry_down_seconds: float = RETRY_DOWN_SECONDS,
                 ) -> None:
        self.read_only = config.read_only
        self._client_id = config.client_id.get_secret_value() if config.client_id else None
        self._client_secret = config.client_secret.get_secret_value() if config.client_secret else None
        self._password = config.password.get_secret_value() if config.password else None
        self._server = _server(config.server_url) if config.server_url else None
        self._cli = _Cli("bw", config.binary or "bw", config.timeout_seconds)
        self._listing = _Listing(refresh_seconds, miss_refresh_seconds)
        self._hold_down = _HoldDown(retry_down_seconds)
        self._session: str | None = None
        self._items: dict[str, dict] = {}  # id → the item as `bw list items` gives it
        self._names: dict[str, list[str]] = {}  # name → ids
        # One bw process at a time: bw keeps its state in one data.json, not safe for concurrent writers.
        self._lock = asyncio.Lock()

    def _secrets(self, *more: str | None) -> tuple[str | None, ...]:
        return (self._client_id, self._client_secret, self._password, self._session, *more)

    # -- the session --

    async def _plain(self, *args: str, env: dict[str, str] | None = None) -> _Output:
        return await self._cli.run([*args, "--nointeraction"], env=env)

    async def _ensure_session(self) -> None:
        if self._session:
            return
        output = await self._plain("status")
        status = _json(output, "bw status") if output.code == 0 else None
        if not isinstance(status, dict):
            raise BackendDown(f"bw status: {_bw_reason(output.err, self._secrets())}")
        if status.get("status") == "unauthenticated":
            await self._point_at_server(status)
            await self._login()
        elif self._server and _server(status.get("serverUrl")) != self._server:
            raise BackendDown(f"bw is logged in to {_server(status.get('serverUrl'))}, not {self._server}: "
                              "log it out (bw logout) or fix server_url")
        await self._unlock()

    async def _point_at_server(self, status: dict) -> None:
        if self._server is None or _server(status.get("serverUrl")) == self._server:
            return
        output = await self._plain("config", "server", self._server)
        if output.code != 0:
            raise BackendDown(f"bw config server: {_bw_reason(output.err, self._secrets())}")

    async def _login(self) -> None:
        if not (self._client_id and self._client_secret):
            raise BackendDown("bw is not logged in and no client_id/client_secret is configured")
        output = await self._plain("login", "--apikey",
                                   env={"BW_CLIENTID": self._client_id, "BW_CLIENTSECRET": self._client_secret})
        if output.code != 0:  # what it prints on success (a useless session key) is never read
            raise BackendDown(f"bw login: {_bw_reason(output.err, self._secrets())}")
        log.info("bw logged in with the API key")

    async def _unlock(self) -> None:
        if not self._password:
            raise BackendDown("bw: the vault is locked and no password is configured")
        output = await self._plain("unlock", "--passwordenv", "BW_PASSWORD", "--raw", env={"BW_PASSWORD": self._password})
        session = output.out.strip()
        if output.code != 0 or not session:
            raise BackendDown(f"bw unlock: {_bw_reason(output.err, self._secrets(session))}")
        self._session = session
        log.info("bw vault unlocked")

    async def _in_session(self, args: Sequence[str], stdin: bytes | None, value: str | None) -> tuple[str, str]:
        """(stdout, "") on success, else ("", bw's reason)."""
        await self._ensure_session()
        output = await self._cli.run([*args, "--nointeraction"], env={"BW_SESSION": self._session or ""},
                                     stdin=stdin)
        return (output.out, "") if output.code == 0 else ("", _bw_reason(output.err, self._secrets(value)))

    async def _bw(self, *args: str, stdin: bytes | None = None, value: str | None = None) -> str:
        """A vault command in the session; a session lost on the way is restored once."""
        what = f"bw {' '.join(args[:2])}"
        out, reason = await self._in_session(args, stdin, value)
        if any(lost in reason for lost in SESSION_LOST):
            self._session = None
            log.info("bw session lost: logging in and unlocking again", reason=reason)
            out, reason = await self._in_session(args, stdin, value)
            if any(lost in reason for lost in SESSION_LOST):
                self._session = None
                raise BackendDown(f"{what}: {reason} (again, right after unlocking)")
        if not reason:
            return out
        if reason.startswith("Not found."):
            raise NotFound(f"{what}: {reason}")
        if MORE_THAN_ONE in reason:
            raise Ambiguous(f"{what}: {reason}")
        raise BackendDown(f"{what}: {reason}")

    # -- the listing --

    async def _refresh(self) -> None:
        await self._bw("sync")
        try:
            items = json.loads(await self._bw("list", "items"))
        except ValueError:
            items = None
        if not isinstance(items, list):
            raise BackendDown("bw list items: the answer is not a list")
        self._items = {}
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and not item.get("deletedDate"):
                self._items[item["id"].lower()] = item
        self._index()
        self._listing.done()
        log.debug("bw listing refreshed", items=len(self._items))

    def _index(self) -> None:
        self._names = {}
        for ident, item in self._items.items():
            self._names.setdefault(str(item.get("name")), []).append(ident)

    def _remember(self, item: object) -> None:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            self._items[item["id"].lower()] = item
            self._index()

    def _lookup(self, path: str) -> tuple[dict, str | None] | None:
        """The item and field a path names: an item named `a/b`, or the field `b` of an item named `a`."""
        if path.startswith(ID_PREFIX):
            ident, _, field = path[len(ID_PREFIX):].partition("/")
            item = self._items.get(ident.lower())
            return (item, field or None) if item is not None else None
        head, slash, field = path.rpartition("/")
        wholes = [(ident, None) for ident in self._names.get(path, [])]
        heads = self._names.get(head, []) if slash else []
        if wholes:  # `a` counts too only where it really has the field `b`
            heads = [ident for ident in heads if self._has_field(self._items[ident], field)]
        candidates = wholes + [(ident, field) for ident in heads]
        if len(candidates) > 1:
            raise Ambiguous(f"{len(candidates)} items match {path}: {', '.join(ident for ident, _ in candidates)} "
                            f"(address one as {ID_PREFIX}<id>)")
        return (self._items[candidates[0][0]], candidates[0][1]) if candidates else None

    @staticmethod
    def _has_field(item: dict, field: str) -> bool:
        try:
            _field_value(item, field)
        except NotFound:
            return False
        except Ambiguous:
            return True
        return True

    async def _resolve(self, path: str) -> tuple[dict, str | None]:
        found = await self._listing.lookup(self._refresh, lambda: self._lookup(path))
        if found is None:
            raise NotFound(f"bw: no item matches {path}")
        return found

    # -- the interface --

    async def get(self, path: str) -> str:
        with self._hold_down.guard():
            async with self._lock:
                item, field = await self._resolve(path)
            return _field_value(item, field)

    async def put(self, path: str, value: str, *, actor: str) -> None:
        if self.read_only:
            raise ReadOnly("bw: read-only")
        with self._hold_down.guard():
            async with self._lock:
                try:
                    item, field = await self._resolve(path)
                except NotFound:
                    if path.startswith(ID_PREFIX):
                        raise
                    item, field = None, None
                if item is None:
                    out = await self._bw("create", "item", stdin=_encode(_new_login(path, value)), value=value)
                else:
                    out = await self._bw("edit", "item", item["id"], stdin=_encode(_with_value(item, field, value)),
                                         value=value)
                try:
                    self._remember(json.loads(out))
                except ValueError:
                    self._listing.at = None  # written, but the answer was odd: list again next time
        log.info("bw item written", path=path, actor=actor, created=item is None)

    async def delete(self, path: str) -> None:
        if self.read_only:
            raise ReadOnly("bw: read-only")
        with self._hold_down.guard():
            async with self._lock:
                item, field = await self._resolve(path)
                if field is not None:
                    raise ReadOnly(f"bw: {path} is a field: delete the whole item, or write the field")
                await self._bw("delete", "item", item["id"])  # to the trash: `bw restore item` brings it back
                self._items.pop(item["id"].lower(), None)
                self._index()

    async def list(self, prefix: str) -> list[Listed]:
        with self._hold_down.guard():
            async with self._lock:
                if self._listing.due():
                    await self._refresh()
                names: dict[str, list[tuple[str, datetime | None]]] = {}
                for ident, item in self._items.items():
                    if item.get("type") in (LOGIN, SECURE_NOTE):  # the kinds whose path alone gives a value
                        names.setdefault(str(item.get("name")), []).append((ident, _when(item.get("revisionDate"))))
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
        if self._session:  # forget the unlocked key bw keeps on disk for this session
            with contextlib.suppress(BackendError):
                await self._cli.run(["lock", "--nointeraction"], env={"BW_SESSION": self._session},
                                    timeout=min(self._cli.timeout, 5.0))
            self._session = None
