"""Real processes on loopback ports: `alai serve`, the CLI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ALAI = [sys.executable, "-m", "alai"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServeProcess:
    process: subprocess.Popen
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Seconds until /readyz answered 200; fails with the server's log otherwise."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"alai serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"alai serve not ready after {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"alai serve did not stop within {timeout} s after signal {sig}:\n{self.log()}") from None


def start_serve(*args: str, env: dict[str, str], log_path: Path, port: int | None = None) -> ServeProcess:
    port = port or free_port()
    full_env = {**os.environ, **env, "ALAI_LOG_FORMAT": "json"}
    handle = open(log_path, "ab")  # noqa: SIM115 - owned by the process for its life
    process = subprocess.Popen(
        [*ALAI, "serve", "--port", str(port), *args],
        env=full_env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    handle.close()
    return ServeProcess(process=process, port=port, log_path=log_path, env=full_env)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ALAI, *args], env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=timeout, input=input,
    )


@dataclass
class NodeProcess:
    """`alai node start` (or `alai worker`) as a process, to kill and start again."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self) -> NodeProcess:
        handle = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process for its life
        self.process = subprocess.Popen([*ALAI, *self.args], env={**os.environ, **self.env}, stdout=handle,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        handle.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError(f"the node did not stop within {timeout} s:\n{self.log()}") from None


def start_node(name: str, *, server: str, token: str, ollama: str | None, log_dir: Path, extra: tuple[str, ...] = (),
               env: dict[str, str] | None = None) -> NodeProcess:
    args = ["node", "start", "--name", name, "--refresh", "0.5", "--grace", "0", *extra]
    if ollama is not None:
        args += ["--ollama", ollama]
    node_env = {"ALAI_SERVER": server, "ALAI_TOKEN": token, **(env or {})}
    return NodeProcess(args=args, env=node_env, log_path=log_dir / f"node-{name}.log").start()
