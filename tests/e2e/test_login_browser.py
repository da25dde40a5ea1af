"""The whole `alai login` in a real headless browser (Debian's chromium, driven by Playwright)."""

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.support.processes import run_cli

pytestmark = pytest.mark.e2e
CHROMIUM = os.environ.get("ALAI_TEST_CHROMIUM", "/usr/bin/chromium")
SCRIPT = Path(__file__).resolve().parents[1] / "support" / "browser_login.py"


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_cli_login_in_a_real_browser(serve, tmp_path):
    server = serve(env={"ALAI_ADMIN_TOKEN": "browser-admin-token"})
    server.wait_ready()
    password = "browser-canary-pw-41"
    assert run_cli("admin", "user", "create", "carol", "--email", "carol@example.com", "--name", "Carol",
                   "--password-stdin", input=password + "\n").returncode == 0
    screenshot = tmp_path / "signed-in.png"
    env = {
        "ALAI_SERVER": server.url,
        "BROWSER": f"{sys.executable} {SCRIPT} %s",
        "ALAI_TEST_LOGIN_USER": "carol",
        "ALAI_TEST_LOGIN_PASSWORD": password,
        "ALAI_TEST_SCREENSHOT": str(screenshot),
    }
    result = run_cli("login", "--timeout", "60", env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"Logged in to {server.url} as carol@example.com" in result.stdout
    assert screenshot.exists()
    whoami = run_cli("whoami", "--json", env={"ALAI_SERVER": server.url})
    assert whoami.returncode == 0, whoami.stderr
    assert json.loads(whoami.stdout)["name"] == "carol@example.com"
    server.stop()
    assert password not in server.log()
