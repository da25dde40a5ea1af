"""Client profiles: which control plane to talk to, kept in the user's config dir.

    <config dir>/config.toml
        current = "default"
        [profiles.default]
        server = "http://127.0.0.1:8420"

The config dir is `ALAI_CONFIG_DIR` if set, else the platform's user config dir.
Environment wins over the file: `ALAI_PROFILE`, `ALAI_SERVER`, `ALAI_TOKEN`.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PROFILE = "default"
DEFAULT_SERVER = "http://127.0.0.1:8420"
# Keys a profile may hold, with what they mean (shown by `alai config`).
PROFILE_KEYS = {
    "server": "URL of the control plane, e.g. https://alai.example.com",
    "token": "a bearer token (an API token; prefer `alai login` once it exists)",
    "timeout": "seconds to wait for the control plane (default 30)",
}


class ProfileError(ValueError):
    """The configuration cannot be used as asked; the message says what to do."""


def config_dir() -> Path:
    override = os.environ.get("ALAI_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("alai", appauthor=False))


def config_path() -> Path:
    return config_dir() / "config.toml"


def load() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {"current": DEFAULT_PROFILE, "profiles": {}}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"{path} is not valid TOML ({error}); fix or delete it") from None
    data.setdefault("current", DEFAULT_PROFILE)
    data.setdefault("profiles", {})
    return data


def save(data: dict[str, Any]) -> None:
    import tomli_w

    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    # Written whole and renamed: a crash never leaves half a file. 0600: it may hold a token.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        tomli_w.dump(data, handle)
    os.replace(tmp, path)


def validate(key: str, value: str) -> Any:
    if key not in PROFILE_KEYS:
        raise ProfileError(f"unknown setting {key!r}; known: {', '.join(PROFILE_KEYS)}")
    if key == "server":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ProfileError(f"server must be an http(s) URL such as {DEFAULT_SERVER}, not {value!r}")
        return value.rstrip("/")
    if key == "timeout":
        try:
            seconds = float(value)
        except ValueError:
            raise ProfileError(f"timeout must be a number of seconds, not {value!r}") from None
        if seconds <= 0:
            raise ProfileError("timeout must be more than 0 seconds")
        return seconds
    return value


@dataclass
class Profile:
    name: str
    server: str
    token: str | None
    timeout: float
    # Where each value came from ("env", "profile", "default", "login", "local admin token").
    sources: dict[str, str]
    # The stored `alai login` for this profile and server, when it is what authenticates.
    login: object | None = None  # credentials.Login; typed loosely to keep this import light
    warnings: list[str] = field(default_factory=list)


def resolve(name: str | None = None) -> Profile:
    """The effective profile: environment, then the named/current profile, then defaults."""
    data = load()
    chosen = name or os.environ.get("ALAI_PROFILE") or data["current"]
    stored = data["profiles"].get(chosen)
    if stored is None and (name or os.environ.get("ALAI_PROFILE")) and chosen != DEFAULT_PROFILE:
        raise ProfileError(f"no profile named {chosen!r}; create it with `alai config set --profile {chosen} server URL`")
    stored = stored or {}
    sources: dict[str, str] = {}

    def pick(key: str, env: str, default: Any) -> Any:
        if os.environ.get(env):
            sources[key] = f"env {env}"
            return os.environ[env]
        if key in stored:
            sources[key] = f"profile {chosen}"
            return stored[key]
        sources[key] = "default"
        return default

    server = validate("server", str(pick("server", "ALAI_SERVER", DEFAULT_SERVER)))
    timeout = float(pick("timeout", "ALAI_TIMEOUT", 30.0))
    from alai.client import credentials

    login = credentials.load(chosen, server)
    warnings: list[str] = []
    token: str | None = None
    if os.environ.get("ALAI_TOKEN"):
        token, sources["token"] = os.environ["ALAI_TOKEN"], "env ALAI_TOKEN"
        if login is not None:
            warnings.append("ALAI_TOKEN is set and overrides your `alai login` for this profile")
        login = None
    elif login is not None:
        token, sources["token"] = login.access_token, "login"
    elif "token" in stored:
        token, sources["token"] = stored["token"], f"profile {chosen}"
    elif is_loopback(server) and (local := local_admin_token()) is not None:
        token, sources["token"] = local, "local admin token"
    else:
        sources["token"] = "none"
    return Profile(name=chosen, server=server, token=token, timeout=timeout, sources=sources, login=login,
                   warnings=warnings)


def is_loopback(server: str) -> bool:
    host = urlsplit(server).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_admin_token() -> str | None:
    """The token `alai serve` writes beside its embedded database on this machine."""
    data_dir = os.environ.get("ALAI_DATA_DIR")
    if data_dir:
        base = Path(data_dir).expanduser()
    else:
        import platformdirs

        base = Path(platformdirs.user_data_dir("alai", appauthor=False))
    path = base / "admin-token"
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None
