"""A fake of the Bitwarden password manager CLI, `bw`, run as a program (standard library only).

What it reproduces (bitwarden/clients apps/cli/src: base-program.ts, vault.program.ts, models/response.ts,
commands/status|get|list|edit.command.ts, vault/create|delete.command.ts, auth/commands/login.command.ts,
key-management/commands/unlock.command.ts, platform/commands/config.command.ts, utils.ts):
- `status` (a compact JSON object: serverUrl, lastSync, userEmail, userId, status — the account fields
  are absent when logged out), `config server [URL]` ("Logout required before server config update."
  while logged in), `login --apikey` (BW_CLIENTID / BW_CLIENTSECRET: "client_id or client_secret is
  incorrect. Try again."; "You are already logged in as …"), `unlock [--passwordenv NAME] [--raw]`
  ("Invalid master password."; --raw prints only the session key, without a newline), `lock`, `logout`,
  `sync` ("Syncing complete." / "Syncing failed: …"), `list items [--search S] [--trash]`,
  `get item ID|SEARCH` (a GUID by id, else bw's substring search over name, username and URIs: none →
  "Not found.", several → "More than one result was found. Try getting a specific object by `id`
  instead. The following objects were found:" and one id per line), `create item [ENCODED]`,
  `edit item ID [ENCODED]` (base64 JSON, as an argument or piped into stdin), `delete item ID
  [--permanent]` (the trash, by default; no output).
- The session: BW_SESSION or `--session`; a vault command without the current session key prints
  "Vault is locked." (or "You are not logged in."). Each unlock makes a new key; lock and logout end it.
- Local data, as the real CLI keeps it: list, get, unlock and status read the copy of the last sync (or
  login); the server's items change only through create/edit/delete, or a test.
- Messages on stderr, exit code 1; JSON on stdout, compact (`--pretty`: 2 spaces), UTF-8 unescaped.
- `"down": true`: what needs the server (login, sync, create, edit, delete) fails as node's fetch does.

State: a JSON file named by FAKE_BW_STATE (`write_state`, `read_state`):
  {"email", "user_id", "client_id", "client_secret", "password", "server_url": null (bitwarden.com),
   "logged_in": false, "session": null, "last_sync": null, "items": [server items], "local": [synced copy],
   "down": false, "delay": 0.0, "relocks": false (each unlock's key stops working at once),
   "calls": [argv of every run, for tests to count]}
`install(bin_dir, state_path)` writes an executable `bw` that runs this file with that state.

Not reproduced: prompts (it behaves as with --nointeraction), email/password and SSO login, two-step
login, `serve`, folders, collections, organizations, attachments, sends, `--response`, `--quiet`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import os
import secrets as random_secrets
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from tests.fakes import cli_state

STATE_VARIABLE = "FAKE_BW_STATE"
MULTIPLE = ("More than one result was found. Try getting a specific object by `id` instead. "
            "The following objects were found:")


# -- helpers for tests ---------------------------------------------------------------------


def now() -> str:
    moment = datetime.now(UTC)  # JavaScript's toISOString: milliseconds
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def login_item(name: str, password: str | None = None, *, username: str | None = None, notes: str | None = None,
               totp: str | None = None, fields: list[dict] | None = None, ident: str | None = None) -> dict:
    """An item as `bw get item` prints it (CipherResponse)."""
    stamp = now()
    return {"passwordHistory": None, "revisionDate": stamp, "creationDate": stamp, "deletedDate": None,
            "object": "item", "id": ident or str(uuid.uuid4()), "organizationId": None, "folderId": None,
            "type": 1, "reprompt": 0, "name": name, "notes": notes, "favorite": False,
            "fields": fields or [],
            "login": {"fido2Credentials": [], "uris": [], "username": username, "password": password,
                      "totp": totp, "passwordRevisionDate": None},
            "collectionIds": []}


def note_item(name: str, notes: str, *, ident: str | None = None) -> dict:
    item = login_item(name, ident=ident, notes=notes)
    del item["login"]
    item.update(type=2, secureNote={"type": 0})
    return item


def field(name: str, value: str | None, kind: int = 1, linked_id: int | None = None) -> dict:
    return {"name": name, "value": value, "type": kind, "linkedId": linked_id}


def new_state(**overrides) -> dict:
    state = {"email": "agent@example.com", "user_id": str(uuid.uuid4()),
             "client_id": f"user.{uuid.uuid4()}", "client_secret": random_secrets.token_urlsafe(22),
             "password": "correct horse battery staple", "server_url": None, "logged_in": False,
             "session": None, "last_sync": None, "items": [], "local": [], "down": False, "delay": 0.0,
             "calls": []}
    state.update(overrides)
    return state


def write_state(path: Path, state: dict) -> None:
    cli_state.write_state(path, state)


def read_state(path: Path) -> dict:
    return cli_state.read_state(path)


def install(bin_dir: Path, state_path: Path, name: str = "bw") -> Path:
    """An executable that runs this fake with `state_path` (it needs no inherited environment)."""
    return cli_state.install(bin_dir, state_path, name=name, variable=STATE_VARIABLE, module="tests.fakes.bw")


# -- the program ---------------------------------------------------------------------------


class Exit(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Options:
    FLAGS = ("--raw", "--pretty", "--nointeraction", "--apikey", "--trash", "--permanent", "--quiet", "--cleanexit",
             "--force", "-f")
    WITH_VALUE = ("--session", "--search", "--passwordenv", "--passwordfile", "--url", "--folderid",
                  "--collectionid", "--organizationid", "--itemid")

    def __init__(self, argv: list[str]) -> None:
        """Commander's options, anywhere on the line."""
        self.flags: set[str] = set()
        self.values: dict[str, str] = {}
        self.words: list[str] = []
        index = 0
        while index < len(argv):
            word = argv[index]
            name, equals, inline = word.partition("=")
            if word in self.FLAGS:
                self.flags.add(word)
            elif name in self.WITH_VALUE:
                if not equals and index + 1 >= len(argv):
                    raise Exit(f"error: option '{name} <{name[2:]}>' argument missing")
                self.values[name] = inline if equals else argv[index + 1]
                index += 0 if equals else 1
            elif word.startswith("--"):
                raise Exit(f"error: unknown option '{word}'")
            else:
                self.words.append(word)
            index += 1


def is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return len(text) == 36


def dump(data: object, options: Options) -> str:
    if "--pretty" in options.flags:
        return json.dumps(data, ensure_ascii=False, indent=2)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def network(state: dict, path: str) -> None:
    if state.get("down"):
        base = (state.get("server_url") or "https://vault.bitwarden.com").rstrip("/")
        host = base.split("://", 1)[-1].split("/", 1)[0]
        raise Exit(f"FetchError: request to {base}/api{path} failed, reason: getaddrinfo ENOTFOUND {host}")


def require_unlocked(state: dict, options: Options) -> None:
    if not state.get("logged_in"):
        raise Exit("You are not logged in.")
    session = options.values.get("--session") or os.environ.get("BW_SESSION")
    if not session or session != state.get("session"):
        raise Exit("Vault is locked.")


def decode(encoded: str | None) -> dict:
    if not encoded:
        encoded = sys.stdin.read() if not sys.stdin.isatty() else ""
    if not encoded:
        raise Exit("`requestJson` was not provided.")
    try:
        request = json.loads(base64.b64decode(encoded.strip()).decode("utf-8"))
    except (binascii.Error, ValueError):
        raise Exit("Error parsing the encoded request data.") from None
    if not isinstance(request, dict):
        raise Exit("Error parsing the encoded request data.")
    return request


def search(items: list[dict], query: str) -> list[dict]:
    """bw's searchCiphersBasic: name, the login's username (its subtitle) and URIs; an id by its start."""
    query = query.strip().lower()

    def matches(item: dict) -> bool:
        login = item.get("login") or {}
        texts = [item.get("name"), login.get("username"), *[(uri or {}).get("uri") for uri in login.get("uris") or []]]
        return any(isinstance(text, str) and query in text.lower() for text in texts) or (
            len(query) >= 8 and item["id"].startswith(query))

    return [item for item in items if matches(item)]


def run(options: Options, state: dict) -> str | None:
    """What goes to stdout (None: nothing); raises Exit with the message for stderr."""
    words = options.words
    command = words[0] if words else ""
    local: list[dict] = state.setdefault("local", [])
    server: list[dict] = state.setdefault("items", [])
    if command == "status":
        session = options.values.get("--session") or os.environ.get("BW_SESSION")
        status = ("unauthenticated" if not state.get("logged_in") else
                  "unlocked" if session and session == state.get("session") else "locked")
        shown = {"serverUrl": state.get("server_url"), "lastSync": state.get("last_sync")}
        if state.get("logged_in"):
            shown.update(userEmail=state["email"], userId=state["user_id"])
        return dump({**shown, "status": status}, options)
    if command == "config":
        if words[1:2] != ["server"]:
            raise Exit("Unknown setting.")
        if len(words) < 3:
            return state.get("server_url") or "https://bitwarden.com"
        if state.get("logged_in"):
            raise Exit("Logout required before server config update.")
        url = words[2]
        state["server_url"] = None if url in ("null", "bitwarden.com", "https://bitwarden.com") else url
        return "Saved setting `config`."
    if command == "login":
        if state.get("logged_in"):
            raise Exit(f"You are already logged in as {state['email']}.")
        if "--apikey" not in options.flags:
            raise Exit("fake bw: only `bw login --apikey` is reproduced")
        client_id, client_secret = os.environ.get("BW_CLIENTID"), os.environ.get("BW_CLIENTSECRET")
        if not client_id or not client_id.strip():
            raise Exit("client_id is required.")
        if not client_secret:
            raise Exit("client_secret is required.")
        if not client_id.startswith(("user", "organization")):
            raise Exit("Invalid API Key")
        network(state, "/identity/connect/token")
        if client_id != state["client_id"] or client_secret != state["client_secret"]:
            raise Exit("client_id or client_secret is incorrect. Try again.")
        state.update(logged_in=True, session=None, last_sync=now(), local=copy.deepcopy(server))
        # an API-key login cannot decrypt the vault: this session key is not one that unlocks it
        throwaway = base64.b64encode(os.urandom(64)).decode()
        return ("You are logged in!\n\nTo unlock your vault, set your session key to the `BW_SESSION` environment "
                f"variable. ex:\n$ export BW_SESSION=\"{throwaway}\"")
    if command == "unlock":
        if not state.get("logged_in"):
            raise Exit("You are not logged in.")
        password = words[1] if len(words) > 1 else None
        if not password and "--passwordenv" in options.values:
            password = os.environ.get(options.values["--passwordenv"])
            if not password:
                sys.stderr.write(f"Warning: Provided passwordenv {options.values['--passwordenv']} is not set\n")
        if not password:
            raise Exit("Master password is required. Try again in interactive mode or provide a password file "
                       "or environment variable.")
        if password != state["password"]:
            raise Exit("Invalid master password.")
        key = base64.b64encode(os.urandom(64)).decode()
        # "relocks": the vault locks again at once (another process ran `bw lock`): the key never works.
        state["session"] = None if state.get("relocks") else key
        if "--raw" in options.flags:
            return key
        return ("Your vault is now unlocked!\n\nTo unlock your vault, set your session key to the `BW_SESSION` "
                f"environment variable. ex:\n$ export BW_SESSION=\"{key}\"")
    if command == "lock":
        state["session"] = None
        return "Your vault is locked."
    if command == "logout":
        if not state.get("logged_in"):
            raise Exit("You are not logged in.")
        state.update(logged_in=False, session=None, local=[], last_sync=None)
        return "You have logged out."
    if command == "sync":  # it fetches the encrypted vault: logged in is enough, locked or not
        if not state.get("logged_in"):
            raise Exit("You are not logged in.")
        try:
            network(state, "/sync")
        except Exit as error:
            raise Exit(f"Syncing failed: {error.message}") from None
        state.update(local=copy.deepcopy(server), last_sync=now())
        return "Syncing complete."
    require_unlocked(state, options)
    if command in ("list", "get", "create", "edit", "delete") and words[1:2] != ["item" + ("s" if command == "list"
                                                                                          else "")]:
        raise Exit("fake bw: only items are reproduced")
    if command == "list":
        trash = "--trash" in options.flags
        found = [item for item in local if bool(item.get("deletedDate")) == trash]
        if "--search" in options.values:
            found = search(found, options.values["--search"])
        return dump(found, options)
    if command == "get":
        if len(words) < 3:
            raise Exit("error: missing required argument 'id'")
        wanted = words[2].lower()
        if is_guid(wanted):
            matched = [item for item in local if item["id"] == wanted]
        else:
            matched = search([item for item in local if not item.get("deletedDate")], wanted)
        if not matched:
            raise Exit("Not found.")
        if len(matched) > 1:
            raise Exit("\n".join([MULTIPLE, *(item["id"] for item in matched)]))
        return dump(matched[0], options)
    if command == "create":
        request = decode(words[2] if len(words) > 2 else None)
        network(state, "/ciphers")
        created = {**login_item(str(request.get("name"))), **request, "id": str(uuid.uuid4()), "object": "item",
                   "revisionDate": now(), "creationDate": now(), "deletedDate": None}
        server.append(created)
        local.append(copy.deepcopy(created))
        return dump(created, options)
    if command == "edit":
        if len(words) < 3:
            raise Exit("error: missing required argument 'id'")
        ident = words[2].lower()
        request = decode(words[3] if len(words) > 3 else None)
        current = next((item for item in local if item["id"] == ident), None)
        if current is None:
            raise Exit("Not found.")
        if current.get("deletedDate"):
            raise Exit("You may not edit a deleted item. Use the restore command first.")
        network(state, f"/ciphers/{ident}")
        edited = {**current, **{key: value for key, value in request.items() if key not in ("id", "object")},
                  "revisionDate": now()}
        state["items"] = [edited if item["id"] == ident else item for item in server]
        state["local"] = [copy.deepcopy(edited) if item["id"] == ident else item for item in local]
        return dump(edited, options)
    if command == "delete":
        if len(words) < 3:
            raise Exit("error: missing required argument 'id'")
        ident = words[2].lower()
        if not any(item["id"] == ident for item in local):
            raise Exit("Not found.")
        network(state, f"/ciphers/{ident}")
        for copy_of in (server, local):
            if "--permanent" in options.flags:
                copy_of[:] = [item for item in copy_of if item["id"] != ident]
            else:
                for item in copy_of:
                    if item["id"] == ident:
                        item["deletedDate"] = now()
        return None
    raise Exit(f"error: unknown command '{command}'")


def main(argv: list[str]) -> int:
    with cli_state.call(STATE_VARIABLE, argv) as (state, save):
        try:
            out = run(Options(argv), state)
        except Exit as error:
            sys.stderr.buffer.write(error.message.encode())
            return 1
        save()
    if out is not None:
        sys.stdout.buffer.write(out.encode())  # no final newline: bw leaves it out when stdout is not a TTY
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
