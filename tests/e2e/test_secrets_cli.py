"""`alai secrets` and `alai run` end to end: the CLI as a user runs it, against a real `alai serve`
with the local encrypted store; the env-file parser on its own.

One server for the module; each test keeps to paths under a prefix of its own.
"""

import base64
import fcntl
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path

import httpx
import pytest

from alai.cli.run import EnvFileError, collect, parse_env_file
from tests.support.cli import cli_server, ok, one_line_error
from tests.support.processes import ALAI, run_cli

pytestmark = pytest.mark.e2e

TOKEN = "secrets-cli-token"
PYTHON = sys.executable


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    master_key = base64.b64encode(os.urandom(32)).decode()
    with cli_server(tmp_path_factory, "secrets-cli", database_url=database_url, token=TOKEN,
                    env={"ALAI_MASTER_KEY": master_key}) as process:
        yield process


@pytest.fixture
def env(server) -> dict[str, str]:
    return {"ALAI_SERVER": server.url, "ALAI_TOKEN": TOKEN, "COLUMNS": "200"}


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def secrets(env: dict[str, str], *args: str, input: str = "") -> subprocess.CompletedProcess:
    # stdin is always a pipe here (empty unless given), never the terminal pytest runs in.
    return run_cli("secrets", *args, env=env, input=input)






def run(env: dict[str, str], *args: str, cwd: Path | None = None, extra: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """`alai run …` with bytes out, so that what it writes is seen exactly."""
    return subprocess.run([*ALAI, "run", *args], env={**os.environ, **env, **(extra or {})}, cwd=cwd,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)


def store(env: dict[str, str], path: str, value: str) -> None:
    ok(secrets(env, "set", path, input=value))


class Terminal:
    """A command on a pseudo-terminal of its own (its controlling terminal, it the foreground):
    what a person at a keyboard sees, and what Ctrl-C does."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.leader, follower = pty.openpty()
        self.output = b""
        self.process = subprocess.Popen(
            args, env={**os.environ, **env}, stdin=follower, stdout=follower, stderr=follower,
            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(follower)

    def expect(self, text: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{text!r} not seen in {self.output!r}"
            if select.select([self.leader], [], [], remaining)[0]:
                try:
                    chunk = os.read(self.leader, 4096)
                except OSError:  # EIO: the process closed the terminal
                    chunk = b""
                assert chunk, f"{text!r} not seen before the end: {self.output!r}"
                self.output += chunk

    def send(self, data: bytes) -> None:
        os.write(self.leader, data)

    def finish(self, timeout: float = 30) -> int:
        try:
            while select.select([self.leader], [], [], timeout)[0]:
                chunk = os.read(self.leader, 4096)
                if not chunk:
                    break
                self.output += chunk
        except OSError:
            pass
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.leader)


def test_set_get_ls_rm(env, prefix):
    value = "sk-live ä\x1b[31m\tend"  # an escape code and a tab come back untouched
    stored = ok(secrets(env, "set", f"{prefix}/api-key", input=value + "\n")).strip()
    assert stored == f"stored {prefix}/api-key (mount /)"
    got = subprocess.run([*ALAI, "secrets", "get", f"{prefix}/api-key"], env={**os.environ, **env},
                         capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    assert got.returncode == 0 and got.stdout == value.encode() and got.stderr == b""  # piped: exactly the value
    assert got.stdout == subprocess.run([*ALAI, "secrets", "get", f"secret://{prefix}/api-key"],  # either form
                                        env={**os.environ, **env}, capture_output=True, timeout=60).stdout
    secret = json.loads(ok(secrets(env, "get", f"{prefix}/api-key", "--json")))
    assert secret["value"] == value and secret["stale"] is False and secret["mount"] == ""

    ok(secrets(env, "set", f"secret://{prefix}/pem", "--keep-final-newline", input="-----KEY-----\n"))
    assert ok(secrets(env, "get", f"{prefix}/pem")) == "-----KEY-----\n"
    ok(secrets(env, "set", f"{prefix}/api-key", input="replaced"))  # set replaces
    assert ok(secrets(env, "get", f"{prefix}/api-key")) == "replaced"

    lines = ok(secrets(env, "ls", prefix)).splitlines()
    assert lines[0].split() == ["PATH", "MOUNT", "UPDATED"]
    assert [line.split()[:2] for line in lines[1:]] == [[f"{prefix}/api-key", "/"], [f"{prefix}/pem", "/"]]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", " ".join(lines[1].split()[2:4]))  # local time
    listed = json.loads(ok(secrets(env, "ls", f"secret://{prefix}", "--json")))
    assert [entry["path"] for entry in listed] == [f"{prefix}/api-key", f"{prefix}/pem"]
    assert "replaced" not in json.dumps(listed)  # never values
    empty = secrets(env, "ls", f"{prefix}/nothing")
    assert ok(empty) == "" and "no secrets under" in empty.stderr

    refused = one_line_error(secrets(env, "rm", f"{prefix}/pem"))  # piped stdin: it cannot ask
    assert refused == f"Error: not deleting {prefix}/pem without asking: add --yes"
    assert ok(secrets(env, "rm", f"{prefix}/pem", "--yes")).strip() == f"deleted {prefix}/pem"
    gone = one_line_error(secrets(env, "get", f"{prefix}/pem"))
    assert gone.startswith(f"Error: there is no secret at {prefix}/pem (HTTP 404")
    assert [entry["path"] for entry in json.loads(ok(secrets(env, "ls", prefix, "--json")))] == [f"{prefix}/api-key"]


def test_on_a_terminal_set_asks_twice_without_echo_and_get_ends_the_line(env, prefix):
    terminal = Terminal([*ALAI, "secrets", "set", f"{prefix}/typed"], env)
    try:
        terminal.expect(b"Value: ")
        terminal.send(b"typed-secret-1\n")
        terminal.expect(b"Repeat for confirmation: ")
        terminal.send(b"typed-secret-1\n")
        assert terminal.finish() == 0
        assert b"stored " + f"{prefix}/typed".encode() in terminal.output
        assert b"typed-secret-1" not in terminal.output  # never echoed
    finally:
        terminal.close()
    terminal = Terminal([*ALAI, "secrets", "get", f"{prefix}/typed"], env)
    try:
        assert terminal.finish() == 0
        assert terminal.output == b"typed-secret-1\r\n"  # on a terminal, the prompt comes back on a line of its own
    finally:
        terminal.close()


def test_values_never_come_from_the_command_line_and_mistakes_are_one_line(env, prefix):
    argv = secrets(env, "set", f"{prefix}/k", "hunter22")
    assert argv.returncode == 2 and "never taken from the command line" in argv.stderr
    assert one_line_error(secrets(env, "set", f"{prefix}/k", input="\n")) == (
        "Error: the value is empty; nothing was stored (`alai secrets rm` deletes a secret)")
    bad = one_line_error(secrets(env, "get", "a b"))
    assert bad.startswith("Error: 'a b' is not a secret path")
    assert one_line_error(secrets(env, "get", "a/../b")).startswith("Error: 'a/../b' is not a secret path")
    assert one_line_error(secrets({**env, "ALAI_SERVER": "http://127.0.0.1:9"}, "get", "a/b")).startswith(
        "Error: cannot reach http://127.0.0.1:9")
    big = one_line_error(secrets(env, "set", f"{prefix}/big", input="x" * (64 * 1024 + 1)))
    assert big.startswith("Error: the value is too large")


def test_audit_shows_reads_writes_and_denials_without_values(env, api, prefix):
    store(env, f"{prefix}/db", "s3cr3t-value")
    ok(secrets(env, "get", f"{prefix}/db"))
    reader = api.post("/v1/identity/tokens", json={"name": f"reader-{prefix}", "scopes": ["secrets:read"]})
    reader.raise_for_status()
    denied = one_line_error(secrets({**env, "ALAI_TOKEN": reader.json()["token"]}, "get", f"{prefix}/db"))
    assert "HTTP 403" in denied and "s3cr3t" not in denied

    entries = json.loads(ok(secrets(env, "audit", "--path", f"secret://{prefix}/db", "--json")))
    assert [(entry["action"], entry["outcome"]) for entry in entries] == [
        ("read", "denied"), ("read", "ok"), ("write", "ok")]  # newest first
    assert entries[0]["principal"] == f"reader-{prefix}" and entries[0]["detail"]
    table = ok(secrets(env, "audit", "--path", f"{prefix}/db"))
    lines = table.splitlines()
    assert lines[0].split() == ["TIME", "PRINCIPAL", "ACTION", "PATH", "OUTCOME", "DETAIL"]
    assert lines[1].split()[2:6] == [f"reader-{prefix}", "read", f"{prefix}/db", "denied"]
    assert "s3cr3t-value" not in table and "s3cr3t-value" not in json.dumps(entries)

    only = json.loads(ok(secrets(env, "audit", "--path", f"{prefix}/db", "--outcome", "denied", "--since", "1h",
                                 "--json")))
    assert [entry["outcome"] for entry in only] == ["denied"]
    theirs = json.loads(ok(secrets(env, "audit", "--principal", f"reader-{prefix}", "--action", "read", "--json")))
    assert [(entry["path"], entry["outcome"]) for entry in theirs] == [(f"{prefix}/db", "denied")]
    first = secrets(env, "audit", "--path", f"{prefix}/db", "--limit", "1")
    assert len(ok(first).splitlines()) == 2 and "1 shown; there are more" in first.stderr
    assert secrets(env, "audit", "--outcome", "maybe").returncode == 2


def test_run_puts_secrets_in_the_environment_and_masks_them(env, prefix, tmp_path):
    store(env, f"{prefix}/api-key", "sk-live-0123456789")
    store(env, f"{prefix}/other", "other-value-42")
    (tmp_path / ".alai.env").write_text(
        "# the project's settings\n"
        f'export API_KEY="secret://{prefix}/api-key"   # resolved\n'
        "MODEL='llama3 8b'\n"
        "\n"
        "LEVEL=debug # a comment\n")
    program = (
        "import os, sys, time\n"
        "key = os.environ['API_KEY']\n"
        "print('key', key, os.environ['MODEL'], os.environ['LEVEL'], os.environ['OTHER'], flush=True)\n"
        "print('to stderr', key, file=sys.stderr, flush=True)\n"
        "sys.stdout.write('split ' + key[:7]); sys.stdout.flush(); time.sleep(0.3)\n"  # across two writes
        "sys.stdout.write(key[7:] + ' done\\n'); sys.stdout.flush()\n"
        "print(sorted(name for name in os.environ if name.startswith('ALAI_SECRET_')))\n"
        "print('length', len(key))\n"
    )
    masked = run(env, "--", PYTHON, "-c", program, cwd=tmp_path,  # .alai.env is read by default
                 extra={"ALAI_SECRET_OTHER": f"secret://{prefix}/other"})
    assert masked.returncode == 0, masked.stderr
    assert masked.stdout.decode().splitlines() == [
        "key ***** llama3 8b debug *****", "split ***** done", "[]", "length 18"]
    assert masked.stderr.decode() == "to stderr *****\n"

    plain = run(env, "--no-masking", "--env-file", str(tmp_path / ".alai.env"), PYTHON, "-c",
                "import os; print(os.environ['API_KEY'], os.environ['OTHER'])",
                extra={"ALAI_SECRET_OTHER": f"{prefix}/other"})  # a mapping's path may leave out secret://
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.decode() == "sk-live-0123456789 other-value-42\n"


def test_run_gives_the_exit_status_of_the_command(env, tmp_path):
    assert run(env, "--", PYTHON, "-c", "import sys; sys.exit(5)", cwd=tmp_path).returncode == 5
    killed = run(env, "--", PYTHON, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", cwd=tmp_path)
    assert killed.returncode == 128 + signal.SIGKILL
    missing = run(env, "--", "no-such-command-here", "x", cwd=tmp_path)
    assert missing.returncode == 127
    assert missing.stderr.decode().strip() == "Error: command not found: no-such-command-here"
    assert run(env, cwd=tmp_path).returncode == 2  # no command: a usage error


SLEEPER = (
    "import signal, sys, time\n"
    "def stop(number, frame):\n"
    "    open(sys.argv[1], 'w').write(str(number))\n"
    "    sys.exit(3)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "signal.signal(signal.SIGINT, stop)\n"
    "signal.signal(signal.SIGHUP, stop)\n"
    "print('ready', flush=True)\n"
    "time.sleep(30)\n"
)


@pytest.mark.parametrize("masking", ["masked", "--no-masking"])
@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda number: number.name)
def test_signals_sent_to_run_reach_the_command(env, prefix, tmp_path, masking, sent):
    store(env, f"{prefix}/k", "value-0123")
    (tmp_path / "f.env").write_text(f"K=secret://{prefix}/k\n")
    marker = tmp_path / "marker"
    options = ["--no-masking"] if masking == "--no-masking" else []
    # Its own session: no terminal, so a SIGINT can only have come from kill(), and is passed on.
    process = subprocess.Popen([*ALAI, "run", "--env-file", str(tmp_path / "f.env"), *options, "--", PYTHON, "-c",
                                SLEEPER, str(marker)], env={**os.environ, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        assert process.stdout.readline() == b"ready\n"
        process.send_signal(sent)
        assert process.wait(30) == 3  # the command's own status, after its handler ran
        assert marker.read_text() == str(int(sent))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_ctrl_c_reaches_the_command_once(env, tmp_path):
    """Ctrl-C goes to the whole foreground group, the command included: `alai run` does not add a second one.
    (Were it to forward this SIGINT as well, the second one would arrive in most runs, not all.)"""
    marker = tmp_path / "count"
    program = (
        "import signal, sys, time\n"
        "count = 0\n"
        "def interrupted(number, frame):\n"
        "    global count\n"
        "    count += 1\n"
        "signal.signal(signal.SIGINT, interrupted)\n"
        "print('ready', flush=True)\n"
        "deadline = time.monotonic() + 20\n"
        "while not count and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        "time.sleep(0.5)\n"  # a second SIGINT would arrive meanwhile
        "open(sys.argv[1], 'w').write(str(count))\n"
        "sys.exit(3)\n"
    )
    terminal = Terminal([*ALAI, "run", "--", PYTHON, "-c", program, str(marker)], env)
    try:
        terminal.expect(b"ready")
        terminal.send(b"\x03")
        assert terminal.finish() == 3
        assert marker.read_text() == "1"
    finally:
        terminal.close()


def test_the_command_is_not_run_when_a_reference_cannot_be_resolved(env, api, prefix, tmp_path):
    store(env, f"{prefix}/there", "value-there")
    marker = tmp_path / "ran"
    command = [PYTHON, "-c", f"open({str(marker)!r}, 'w').write('ran')"]
    (tmp_path / "missing.env").write_text(f"A=secret://{prefix}/there\nB=secret://{prefix}/missing\n")
    missing = run(env, "--env-file", str(tmp_path / "missing.env"), "--", *command)
    error = one_line_error(subprocess.CompletedProcess(missing.args, missing.returncode, missing.stdout.decode(),
                                                       missing.stderr.decode()))
    assert f"no secret at {prefix}/missing" in error and error.endswith(f"{PYTHON} was not run")
    assert "value-there" not in error and not marker.exists()

    reader = api.post("/v1/identity/tokens", json={"name": f"run-{prefix}", "scopes": ["secrets:read"]}).json()
    (tmp_path / "denied.env").write_text(f"A=secret://{prefix}/there\n")
    denied = run({**env, "ALAI_TOKEN": reader["token"]}, "--env-file", str(tmp_path / "denied.env"), "--", *command)
    assert denied.returncode == 1 and b"HTTP 403" in denied.stderr and not marker.exists()

    (tmp_path / "broken.env").write_text("GOOD=1\nthis is not an assignment\n")
    broken = run(env, "--env-file", str(tmp_path / "broken.env"), "--", *command)
    assert broken.returncode == 1 and not marker.exists()
    assert broken.stderr.decode().strip() == (f"Error: {tmp_path / 'broken.env'}:2: expected NAME=VALUE, "
                                              "got 'this is not an assignment'")
    absent = run(env, "--env-file", str(tmp_path / "absent.env"), "--", *command)
    assert absent.returncode == 1 and b"does not exist" in absent.stderr and not marker.exists()


def test_the_env_file_format():
    text = (
        "# comment\n"
        "  \n"
        "A=plain value  # comment\n"
        "export B=secret://x/y\n"
        "C='single $HOME # kept'\n"
        'D="double \\"quoted\\"\\nnext"\n'
        'E="spans\n'
        'two lines"\n'
        "F=\n"
        "G=a#b\n"
        "H = spaced \n"
    )
    assert parse_env_file(text) == [
        ("A", "plain value", 3), ("B", "secret://x/y", 4), ("C", "single $HOME # kept", 5),
        ("D", 'double "quoted"\nnext', 6), ("E", "spans\ntwo lines", 7), ("F", "", 9), ("G", "a#b", 10),
        ("H", "spaced", 11)]
    for broken, message in (("1A=x", "expected NAME=VALUE"), ("A", "expected NAME=VALUE"),
                            ('A="open', "never closed"), ("A='x' y", "after the closing quote")):
        with pytest.raises(EnvFileError, match=message):
            parse_env_file(broken, "f.env")

    wanted = collect([("f.env", "A=secret://p/a\nB=1\nC=secret://p/c\n")],
                     {"ALAI_SECRET_C": "p/other", "ALAI_SECRET_D": "secret://p/d", "PATH": "/bin"})
    assert wanted.references == {"A": "p/a", "C": "p/other", "D": "p/d"}  # the environment's mapping wins
    assert wanted.plain == {"B": "1"}
    with pytest.raises(EnvFileError, match="ALAI_SECRET_"):
        collect([], {"ALAI_SECRET_1X": "p/a"})


def test_the_secrets_commands_never_import_the_server():
    probe = (
        "import json, sys\nfrom click.testing import CliRunner\nfrom alai.cli.main import root\n"
        "for args in (['secrets', '--help'], ['secrets', 'ls'], ['secrets', 'get', 'a/b'], ['secrets', 'audit'],\n"
        "             ['run', '--', 'true'], ['run', '--help']):\n"
        "    CliRunner().invoke(root, args, env={'ALAI_SERVER': 'http://127.0.0.1:9', 'ALAI_TOKEN': 't',\n"
        "                                        'ALAI_SECRET_X': 'a/b'})\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert {"alai.cli.secrets", "alai.cli.run"} <= set(loaded)
    assert [name for name in loaded if name.startswith("alai.server")] == []


def test_run_without_references_needs_no_control_plane(tmp_path):
    (tmp_path / ".alai.env").write_text("GREETING=hello\n")
    result = run({"ALAI_SERVER": "http://127.0.0.1:9", "ALAI_TOKEN": "t"}, "--", PYTHON, "-c",
                 "import os; print(os.environ['GREETING'])", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\n"
