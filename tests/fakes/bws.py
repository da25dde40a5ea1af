"""A fake of the Bitwarden Secrets Manager CLI, `bws` 1.0, run as a program (standard library only).

What it reproduces (bitwarden/sdk-sm crates/bws: src/cli.rs, src/command/secret.rs, src/render.rs,
src/main.rs, and the error tests in crates/bws/tests):
- `secret list [PROJECT_ID]`, `secret get ID`, `secret create KEY VALUE PROJECT_ID [--note N]`,
  `secret edit ID [--key K] [--value V] [--note N] [--project-id P]` (at least one), `secret delete ID…`,
  `project list`; global options anywhere: `-o/--output json` (the default; other formats are refused
  here), `-t/--access-token` or BWS_ACCESS_TOKEN, `-u/--server-url` or BWS_SERVER_URL (http(s) only),
  `-c/--color`; `--` ends the options; ids must be UUIDs.
- Output as serde_json's pretty printer writes it: 2-space indents, UTF-8 unescaped, a final newline;
  SecretResponse's fields in order (id, organizationId, projectId, key, value, note, creationDate,
  revisionDate). `secret delete` prints "1 secret deleted successfully." / "N secrets …".
- Errors on stderr with exit code 1: by default as bws 1.0 prints them, a color-eyre report
  ("Error:\\n   0: …\\n\\nLocation:\\n   crates/bws/src/main.rs:…"); with `"error_style": "short"`, as later
  releases do ("Error: …\\nHint: …"). Usage errors exit 2, as clap's do. A token the server refuses
  (revoked, unknown) gives the identity server's `[400 Bad Request] {"error":"invalid_client"}`;
  `"down": true`, the connection-refused chain; an unknown id, `[404 Not Found]`.

State: a JSON file named by FAKE_BWS_STATE (`write_state`, `read_state`):
  {"tokens": [valid access tokens], "revoked": [refused ones], "organization_id": "…",
   "projects": [project ids], "secrets": [SecretResponse dicts], "down": false, "delay": 0.0,
   "error_style": "report", "calls": [argv of every run, for tests to count]}
`install(bin_dir, state_path)` writes an executable `bws` that runs this file with that state.

Not reproduced: config files and profiles, the state directory, `run`, `config`, `completions`, project
writes, access policies, YAML/env/table/tsv output, colours, rate limits.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

from tests.fakes import cli_state

STATE_VARIABLE = "FAKE_BWS_STATE"
DEFAULT_SERVER = "https://vault.bitwarden.com"
ORGANIZATION_ID = "6e1b5a74-5c29-4d8a-9d0c-b1a2c3d4e5f6"
FIELDS = ("id", "organizationId", "projectId", "key", "value", "note", "creationDate", "revisionDate")
NOT_FOUND_BODY = ('{"message":"Resource not found.","validationErrors":null,"exceptionMessage":null,'
                  '"exceptionStackTrace":null,"innerExceptionMessage":null,"object":"error"}')
_TOKEN = re.compile(r"^0\.([0-9a-fA-F-]{36})\.([^:]+):(.+)$")


# -- helpers for tests ---------------------------------------------------------------------


def make_token() -> str:
    """An access token shaped like a real one: `0.<client id>.<client secret>:<encryption key>`."""
    return f"0.{uuid.uuid4()}.{uuid.uuid4().hex[:30]}:{'A' * 22}=="


def now() -> str:
    # chrono writes nanoseconds: the API's dates have 7 fractional digits, serde renders 9
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def secret(key: str, value: str, project_id: str | None, *, note: str = "", ident: str | None = None) -> dict:
    stamp = now()
    return {"id": ident or str(uuid.uuid4()), "organizationId": ORGANIZATION_ID, "projectId": project_id,
            "key": key, "value": value, "note": note, "creationDate": stamp, "revisionDate": stamp}


def write_state(path: Path, state: dict) -> None:
    cli_state.write_state(path, state)


def read_state(path: Path) -> dict:
    return cli_state.read_state(path)


def install(bin_dir: Path, state_path: Path, name: str = "bws") -> Path:
    """An executable that runs this fake with `state_path` (it needs no inherited environment)."""
    return cli_state.install(bin_dir, state_path, name=name, variable=STATE_VARIABLE, module="tests.fakes.bws")


# -- the program ---------------------------------------------------------------------------


class Exit(Exception):
    def __init__(self, code: int, stderr: str = "", stdout: str = "") -> None:
        super().__init__(stderr)
        self.code, self.stderr, self.stdout = code, stderr, stdout


def usage_error(message: str) -> Exit:
    return Exit(2, f"error: {message}\n\nUsage: bws secret <COMMAND>\n\nFor more information, try '--help'.\n")


def failure(style: str, report: list[str], short: str, hint: str | None = None, line: int = 108) -> Exit:
    if style == "short":
        return Exit(1, f"Error: {short}\n" + (f"Hint: {hint}\n" if hint else ""))
    causes = "".join(f"{index:>4}: {cause}\n" for index, cause in enumerate(report))
    return Exit(1, f"Error: \n{causes}\nLocation:\n   crates/bws/src/main.rs:{line}\n\n"
                   "Backtrace omitted. Run with RUST_BACKTRACE=1 environment variable to display it.\n"
                   "Run with RUST_BACKTRACE=full to include source snippets.\n")


def not_found(style: str, ident: str, what: str = "Secret") -> Exit:
    return failure(style, [f"Received error message from server: [404 Not Found] {NOT_FOUND_BODY}"],
                   f"{what} {ident} not found or not accessible.",
                   "Check the ID and that the machine account has access to it.", line=185)


def parse(argv: list[str]) -> tuple[dict, list[str]]:
    """Global options anywhere (clap `global = true`); `--` ends the options."""
    options: dict = {"output": "json"}
    words: list[str] = []
    index = 0
    with_value = {"-o": "output", "--output": "output", "-t": "access_token", "--access-token": "access_token",
                  "-u": "server_url", "--server-url": "server_url", "-c": "color", "--color": "color",
                  "--note": "note", "--key": "key", "--value": "value", "--project-id": "project_id"}
    while index < len(argv):
        word = argv[index]
        if word == "--":
            words.extend(argv[index + 1:])
            break
        name, equals, inline = word.partition("=")
        if name in with_value and word.startswith("-"):
            if equals:
                options[with_value[name]] = inline
            else:
                if index + 1 >= len(argv) or argv[index + 1].startswith("-"):
                    raise usage_error(f"a value is required for '{name} <{with_value[name].upper()}>' "
                                      "but none was supplied")
                options[with_value[name]] = argv[index + 1]
                index += 1
        elif word.startswith("-") and word != "-":
            raise usage_error(f"unexpected argument '{word}' found")
        else:
            words.append(word)
        index += 1
    return options, words


def check_uuid(text: str, what: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise usage_error(f"invalid value '{text}' for '<{what}>': invalid character") from None


def render(data: object) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2) + "\n"


def ordered(entry: dict) -> dict:
    return {name: entry.get(name) for name in FIELDS}


def authenticate(state: dict, options: dict, style: str) -> None:
    token = (options.get("access_token") or os.environ.get("BWS_ACCESS_TOKEN") or "").strip()
    if not token:
        raise failure(style, ["Missing access token"], "No access token provided.",
                      "Pass --access-token or set BWS_ACCESS_TOKEN.", line=62)
    if not _TOKEN.match(token):
        raise failure(style, ["Doesn't contain a decryption key" if ":" not in token else "Has the wrong number of parts"],
                      "The access token is malformed.", "Copy the full access token from the Bitwarden web app.",
                      line=67)
    server = (options.get("server_url") or os.environ.get("BWS_SERVER_URL") or DEFAULT_SERVER).rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise usage_error(f"invalid value '{server}' for '--server-url <SERVER_URL>': '{server}' is not a valid URL")
    identity = "https://identity.bitwarden.com" if server == DEFAULT_SERVER else f"{server}/identity"
    if state.get("down"):
        host = identity.split("://", 1)[1].split("/", 1)[0]
        raise failure(style, [f"error sending request for url ({identity}/connect/token)", "client error (Connect)",
                              "tcp connect error: Connection refused (os error 111)",
                              "Connection refused (os error 111)"],
                      f"Could not connect to {host}: connection refused.",
                      "Check the server URL (--server-url or server-base in the config).")
    if token in state.get("revoked", []) or token not in state.get("tokens", []):
        raise failure(style, ['Received error message from server: [400 Bad Request] {"error":"invalid_client"}'],
                      "The access token is invalid, expired, or revoked.",
                      "Create a new access token in the Bitwarden web app.")


def run(argv: list[str], state: dict) -> tuple[str, bool]:
    """(stdout, whether the state changed); raises Exit for errors."""
    options, words = parse(argv)
    style = state.get("error_style", "report")
    if len(words) < 2 or words[0] not in ("secret", "project"):
        raise usage_error("unrecognized subcommand" + (f" '{words[0]}'" if words else ""))
    if options["output"] != "json":
        raise Exit(3, f"fake bws: --output {options['output']} is not reproduced\n")
    group, command, rest = words[0], words[1], words[2:]
    if group == "project" and command == "list":
        authenticate(state, options, style)
        return render([{"id": ident, "organizationId": state.get("organization_id", ORGANIZATION_ID),
                        "name": f"project {ident[:8]}", "creationDate": now(), "revisionDate": now()}
                       for ident in state.get("projects", [])]), False
    if group != "secret" or command not in ("list", "get", "create", "edit", "delete"):
        raise usage_error(f"unrecognized subcommand '{command}'")
    secrets: list[dict] = state.setdefault("secrets", [])
    by_id = {entry["id"]: entry for entry in secrets}
    if command == "list":
        project = check_uuid(rest[0], "PROJECT_ID") if rest else None
        authenticate(state, options, style)
        if project is not None and project not in state.get("projects", []):
            raise not_found(style, project, "Project")
        return render([ordered(entry) for entry in secrets if project is None or entry["projectId"] == project]), False
    if command == "get":
        if len(rest) != 1:
            raise usage_error("the following required arguments were not provided:\n  <SECRET_ID>")
        ident = check_uuid(rest[0], "SECRET_ID")
        authenticate(state, options, style)
        if ident not in by_id:
            raise not_found(style, ident)
        return render(ordered(by_id[ident])), False
    if command == "create":
        if len(rest) != 3:
            raise usage_error("the following required arguments were not provided:\n  <KEY>\n  <VALUE>\n  <PROJECT_ID>")
        key, value, project = rest[0], rest[1], check_uuid(rest[2], "PROJECT_ID")
        authenticate(state, options, style)
        if not key.strip():
            raise failure(style, ["Secret key must not be empty"], "Secret key must not be empty.")
        if project not in state.get("projects", []):
            raise not_found(style, project, "Project")
        created = secret(key, value, project, note=options.get("note", ""))
        created["organizationId"] = state.get("organization_id", ORGANIZATION_ID)
        secrets.append(created)
        return render(ordered(created)), True
    if command == "edit":
        if len(rest) != 1:
            raise usage_error("the following required arguments were not provided:\n  <SECRET_ID>")
        ident = check_uuid(rest[0], "SECRET_ID")
        changes = {name: options[name] for name in ("key", "value", "note", "project_id") if name in options}
        if not changes:
            raise usage_error("the following required arguments were not provided:\n"
                              "  <--key <KEY>|--value <VALUE>|--note <NOTE>|--project-id <PROJECT_ID>>")
        authenticate(state, options, style)
        if ident not in by_id:
            raise not_found(style, ident)
        entry = by_id[ident]
        entry.update({name: value for name, value in changes.items() if name != "project_id"})
        if "project_id" in changes:
            entry["projectId"] = check_uuid(changes["project_id"], "PROJECT_ID")
        entry["revisionDate"] = now()
        return render(ordered(entry)), True
    # delete
    if not rest:
        raise usage_error("the following required arguments were not provided:\n  <SECRET_IDS>...")
    idents = [check_uuid(word, "SECRET_IDS") for word in rest]
    authenticate(state, options, style)
    if any(ident not in by_id for ident in idents):  # the server refuses the whole batch
        raise not_found(style, idents[0])
    state["secrets"] = [entry for entry in secrets if entry["id"] not in idents]
    count = len(idents)
    return f"{count} secret{'s' if count > 1 else ''} deleted successfully.\n", True


def main(argv: list[str]) -> int:
    with cli_state.call(STATE_VARIABLE, argv) as (state, save):
        try:
            out, changed = run(argv, state)
        except Exit as stop:
            sys.stdout.buffer.write(stop.stdout.encode())
            sys.stderr.buffer.write(stop.stderr.encode())
            return stop.code
        if changed:
            save()
    sys.stdout.buffer.write(out.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
