"""Who may read, write, list or delete which secret paths. Default deny.

A policy names principals and path globs:

- principals: `*`; `user:NAME` (a user's name, email or id) or `user:*`; `token:NAME`
  (an API token by name) or `token:*`; `node:NAME` / `node:*` (an API token with the
  `node` scope); `agent:NAME` / `agent:*` (a run's token).
- paths: `*` matches within one segment, `**` any number of segments (also none),
  `?` one character: `together/*`, `agents/tasker/**`, `**`.

Holders of the `admin` scope may do everything. An agent's run token may read only
the paths its definition lists (its `secret_paths`), whatever the policies say: an
agent never gets more than its definition, and a policy cannot widen that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from alai.server.deps import ADMIN_SCOPE, Principal
from alai.server.problems import ProblemError

_PRINCIPAL = re.compile(r"^(\*|(user|token|node|agent):([A-Za-z0-9@._+-]+|\*))$")


@lru_cache(maxsize=1024)
def glob_regex(glob: str) -> re.Pattern[str]:
    out, index = [], 0
    while index < len(glob):
        if glob.startswith("**/", index):
            out.append("(?:[^/]+/)*")
            index += 3
        elif glob.startswith("**", index):
            out.append(".*")
            index += 2
        elif glob[index] == "*":
            out.append("[^/]*")
            index += 1
        elif glob[index] == "?":
            out.append("[^/]")
            index += 1
        else:
            out.append(re.escape(glob[index]))
            index += 1
    return re.compile("".join(out) + r"\Z")


def path_matches(glob: str, path: str) -> bool:
    return glob_regex(glob).match(path) is not None


def check_principal_pattern(pattern: str) -> str:
    if not _PRINCIPAL.match(pattern):
        raise ProblemError(422, f"{pattern!r} is not a principal pattern: *, user:NAME, token:NAME, node:NAME, "
                                "agent:NAME (NAME may be *)", slug="bad-policy")
    return pattern


def check_path_glob(glob: str) -> str:
    if not glob or len(glob) > 300 or not re.match(r"^[A-Za-z0-9._:*?/-]+$", glob):
        raise ProblemError(422, f"{glob!r} is not a path glob (segments of letters, digits, . _ -, with * ** ?)",
                           slug="bad-policy")
    return glob


def principal_matches(pattern: str, principal: Principal) -> bool:
    if pattern == "*":
        return True
    kind, _, name = pattern.partition(":")
    names = {principal.subject, principal.name or ""} - {""}
    if kind == "user":
        return principal.kind == "user" and (name == "*" or name in names)
    if kind == "token":
        return principal.kind == "api-token" and (name == "*" or name in names)
    if kind == "node":
        return principal.kind == "api-token" and "node" in principal.scopes and (name == "*" or name in names)
    if kind == "agent":
        return principal.kind == "agent" and (name == "*" or name in names)
    return False


@dataclass(frozen=True)
class Rule:
    name: str
    principals: tuple[str, ...]
    actions: frozenset[str]
    paths: tuple[str, ...]


def decide(rules: list[Rule], principal: Principal, action: str, path: str) -> str | None:
    """None when allowed; else why not (one line, for the audit and the 403)."""
    if ADMIN_SCOPE in principal.scopes:
        return None
    who = principal.name or principal.subject
    if principal.kind == "agent":
        if action in ("read", "list") and any(path_matches(glob, path) for glob in principal.secret_paths):
            return None
        return f"agent {who} may only read what its definition lists"
    for rule in rules:
        if action in rule.actions and any(principal_matches(p, principal) for p in rule.principals) \
                and any(path_matches(glob, path) for glob in rule.paths):
            return None
    return f"no policy lets {who} {action} {path}"
