"""Where `alai login` keeps its tokens: the OS keyring, or a 0600 file where there is none.

One record per (profile, server). The keyring is asked with a timeout, because a
locked or absent Secret Service can otherwise hang a CLI for minutes. Writes are
whole-file replacements (temp file + rename), so a crash never loses the rotated
refresh token half-way.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alai.client.profiles import config_dir

_held = threading.local()
_in_process = threading.Lock()  # flock does not exclude threads of one process from each other
KEYRING_SERVICE = "alai"
KEYRING_TIMEOUT = 3.0
FILE_NAME = "credentials.json"


@dataclass
class Login:
    server: str
    issuer: str
    client_id: str
    token_endpoint: str
    revocation_endpoint: str | None
    access_token: str
    refresh_token: str | None
    expires_at: float
    subject: str | None = None
    email: str | None = None
    name: str | None = None

    def expires_within(self, seconds: float) -> bool:
        return self.expires_at - time.time() < seconds


def _key(profile: str, server: str) -> str:
    return f"{profile}@{server}"


def _keyring_usable() -> Any | None:
    if os.environ.get("ALAI_KEYRING", "").lower() in ("0", "off", "no", "false"):
        return None
    try:
        import keyring
        from keyring.backends import fail, null

        backend = _with_timeout(keyring.get_keyring)
    except Exception:
        return None
    if backend is None or isinstance(backend, (fail.Keyring, null.Keyring)) or getattr(backend, "priority", 1) <= 0:
        return None
    return keyring


def _with_timeout(function, *args):
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(function, *args).result(timeout=KEYRING_TIMEOUT)
    except concurrent.futures.TimeoutError:
        return None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def file_path() -> Path:
    return config_dir() / FILE_NAME


def _read_file() -> dict[str, Any]:
    try:
        return json.loads(file_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_file(data: dict[str, Any]) -> None:
    path = file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    # A temp file of our own (mkstemp: 0600, unique), then an atomic rename.
    fd, tmp = tempfile.mkstemp(prefix=".credentials-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def locked() -> Iterator[None]:
    """Serialises read-modify-write of stored logins (and refreshes) between processes
    of this user: two CLIs renewing one login at once would spend the same refresh
    token twice, which the server treats as theft."""
    # Re-entrant within a thread (a refresh saves while it holds the lock); flock itself
    # is not: a second descriptor of this process would wait for the first forever.
    if getattr(_held, "depth", 0):
        _held.depth += 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with _in_process:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here; the server's grace period covers races
            fcntl = None  # type: ignore[assignment]
        fd = os.open(folder / ".credentials.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            _held.depth = 1
            try:
                yield
            finally:
                _held.depth = 0
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def storage() -> str:
    """'keyring' or 'file', whichever this machine uses."""
    return "keyring" if _keyring_usable() is not None else "file"


def save(profile: str, login: Login) -> str:
    """Stores the login; returns where ('keyring' or 'file')."""
    payload = json.dumps(asdict(login))
    keyring = _keyring_usable()
    if keyring is not None:
        try:
            _with_timeout(keyring.set_password, KEYRING_SERVICE, _key(profile, login.server), payload)
            if _with_timeout(keyring.get_password, KEYRING_SERVICE, _key(profile, login.server)) == payload:
                return "keyring"
        except Exception:
            pass
    with locked():
        data = _read_file()
        data[_key(profile, login.server)] = asdict(login)
        _write_file(data)
    return "file"


def load(profile: str, server: str) -> Login | None:
    keyring = _keyring_usable()
    raw: Any = None
    if keyring is not None:
        try:
            raw = _with_timeout(keyring.get_password, KEYRING_SERVICE, _key(profile, server))
        except Exception:
            raw = None
    if raw:
        try:
            return Login(**json.loads(raw))
        except (ValueError, TypeError):
            return None
    record = _read_file().get(_key(profile, server))
    try:
        return Login(**record) if record else None
    except TypeError:
        return None


def delete(profile: str, server: str) -> bool:
    removed = False
    keyring = _keyring_usable()
    if keyring is not None:
        try:
            if _with_timeout(keyring.get_password, KEYRING_SERVICE, _key(profile, server)):
                _with_timeout(keyring.delete_password, KEYRING_SERVICE, _key(profile, server))
                removed = True
        except Exception:
            pass
    with locked():
        data = _read_file()
        if data.pop(_key(profile, server), None) is not None:
            _write_file(data)
            removed = True
    return removed
