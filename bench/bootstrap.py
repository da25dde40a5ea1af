#!/usr/bin/env python3
"""Wall time from a fresh virtual environment to a ready client (target <= 60 s on 2 cores).

Prepared first, not counted: a skills repository of N files (git, one commit), `alai
serve` from this project's .venv mirroring it (embedded PostgreSQL), a user of the
built-in issuer, and a wheel of this project (`pip wheel --no-deps .`).

Then, counted, as on a new laptop with an empty home directory:

    venv      python -m venv
    install   pip install the wheel (the light client: no server extra)
    login     `alai login --no-browser`, the pasted redirect driven as a browser would;
              its set-up after sign-in is split out from its progress lines:
              sign-in, skills sync (the clone of N files into ~/.claude), the other steps
    doctor    `alai doctor` (exit 0 required)

    python bench/bootstrap.py [--files 2000] [--no-pip-cache] [--keep]

pip's download cache is used unless --no-pip-cache (a laptop that never ran pip
has none; PyPI must then be reachable).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from support import running_serve

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-bootstrap-token"
MASTER_KEY = "u2l8uGf6n6Ri6yVVbmFrOkhVSnx2kU4lIoPp6XYn9s0="
USER, PASSWORD = "bench@example.com", "bench-password-2718"
GIT_ENV = {"GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com", "GIT_COMMITTER_NAME": "Bench",
           "GIT_COMMITTER_EMAIL": "bench@example.com", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed:\n{done.stdout}\n{done.stderr}")
    return done


def make_repository(folder: Path, files: int) -> str:
    """N files of skills, rules and agents, about 1 KiB each, in folders of 50."""
    folder.mkdir(parents=True)
    env = {**os.environ, **GIT_ENV}
    run(["git", "init", "-q", "-b", "main", str(folder)], env=env)
    (folder / "CLAUDE.md").write_text("# Rules\n\nBe brief.\n")
    body = "Follow the steps; say what you did and why.\n" * 22
    for index in range(files - 1):
        kind = ("skills", "agents", "rules")[index % 3]
        path = folder / kind / f"group-{index // 50:03d}" / f"item-{index:04d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"---\nname: item-{index}\n---\n{body}")
    run(["git", "-C", str(folder), "add", "-A"], env=env)
    run(["git", "-C", str(folder), "commit", "-q", "-m", f"{files} files"], env=env)
    return run(["git", "-C", str(folder), "rev-parse", "HEAD"], env=env).stdout.strip()


def wait_mirrored(server: str, commit: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(f"{server}/v1/skills/status", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        if status.get("head_commit") == commit:
            return
        time.sleep(0.1)
    raise SystemExit(f"the control plane did not mirror {commit}: {status}")


def sign_in(authorize_url: str) -> str:
    """What the person does in the browser: the built-in issuer's form; returns the redirect."""
    with httpx.Client(timeout=30) as http:
        page = http.get(authorize_url)
        fields = {unescape(k): unescape(v) for k, v in HIDDEN.findall(page.text)}
        base = "{0.scheme}://{0.netloc}".format(urlsplit(authorize_url))
        response = http.post(f"{base}/oauth/authorize", data={**fields, "username": USER, "password": PASSWORD})
        if response.status_code != 302:
            raise SystemExit(f"sign-in failed: HTTP {response.status_code}")
        return response.headers["location"]


def timed_login(alai: Path, env: dict[str, str]) -> dict[str, float]:
    """`alai login --no-browser`, each output line stamped as it arrives."""
    started = time.perf_counter()
    cli = subprocess.Popen([str(alai), "login", "--no-browser"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    lines: list[tuple[float, str]] = []

    def follow(stream) -> None:
        for line in stream:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))

    stderr = threading.Thread(target=follow, args=(cli.stderr,), daemon=True)
    stderr.start()
    url = cli.stdout.readline().strip()
    cli.stdin.write(sign_in(url) + "\n")
    cli.stdin.close()
    follow(cli.stdout)
    cli.wait(300)
    stderr.join(10)
    total = time.perf_counter() - started
    if cli.returncode != 0:
        raise SystemExit("alai login failed:\n" + "\n".join(text for _, text in lines))

    def at(prefix: str) -> float:
        return next(stamp for stamp, text in lines if text.startswith(prefix))

    signed_in, profile, synced = at("Logged in to"), at("[1/4]"), at("[2/4]")
    print(next(text for _, text in lines if text.startswith("[2/4]")))
    return {"sign-in": signed_in, "skills sync": synced - profile, "other set-up": total - signed_in - (synced - profile),
            "login total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--no-pip-cache", action="store_true", help="Install as if pip had never run here.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder (its path is printed).")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="alai-bench-bootstrap-"))
    try:
        prepared = time.perf_counter()
        commit = make_repository(scratch / "system", args.files)
        wheels = scratch / "wheels"
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
             "-w", str(wheels), str(ROOT)])
        wheel = next(wheels.glob("alai-*.whl"))
        with running_serve(scratch / "server", token=TOKEN, extra_env={
                "ALAI_SKILLS_REPO": str(scratch / "system"), "ALAI_MASTER_KEY": MASTER_KEY}) as server:
            wait_mirrored(server, commit)
            run([sys.executable, "-m", "alai", "admin", "user", "create", "bench", "--email", USER,
                 "--password-stdin"], input=PASSWORD + "\n",
                env={**os.environ, "ALAI_DATA_DIR": str(scratch / "server" / "data")})
            print(f"prepared in {time.perf_counter() - prepared:.1f} s (not counted): {args.files} files at "
                  f"{commit[:7]}, {wheel.name}, alai serve on {server}")

            home = scratch / "laptop"
            home.mkdir()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("ALAI_", "XDG_", "VIRTUAL_ENV"))}
            env.update({"HOME": str(home), "ALAI_SERVER": server, "ALAI_KEYRING": "off", "NO_COLOR": "1"})
            if args.no_pip_cache:
                env["PIP_NO_CACHE_DIR"] = "1"
            times: dict[str, float] = {}
            venv = home / "venv"
            started = time.perf_counter()
            run([sys.executable, "-m", "venv", str(venv)], env=env)
            times["venv"] = time.perf_counter() - started
            started = time.perf_counter()
            run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 str(wheel)], env=env)
            times["install"] = time.perf_counter() - started
            login = timed_login(venv / "bin" / "alai", env)
            started = time.perf_counter()
            doctor = subprocess.run([str(venv / "bin" / "alai"), "doctor"], capture_output=True, text=True,
                                    env={k: v for k, v in env.items() if k != "ALAI_SERVER"})
            times["doctor"] = time.perf_counter() - started
            if doctor.returncode != 0:
                raise SystemExit(f"alai doctor failed:\n{doctor.stdout}{doctor.stderr}")
            cloned = len(run(["git", "-C", str(home / ".claude"), "ls-files"]).stdout.splitlines())
            if cloned != args.files:
                raise SystemExit(f"~/.claude has {cloned} files, not {args.files}")
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"venv          {times['venv']:6.1f} s")
    print(f"install       {times['install']:6.1f} s  (pip install the wheel{', no pip cache' if args.no_pip_cache else ''})")
    print(f"login         {login['login total']:6.1f} s  (sign-in {login['sign-in']:.1f} s, skills sync "
          f"{login['skills sync']:.1f} s, other set-up {login['other set-up']:.1f} s)")
    print(f"doctor        {times['doctor']:6.1f} s")
    total = times["venv"] + times["install"] + login["login total"] + times["doctor"]
    print(f"bootstrap: fresh venv to a ready client in {total:.1f} s (target <= 60 s): {args.files} files synced, "
          f"doctor passes; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
