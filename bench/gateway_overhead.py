#!/usr/bin/env python3
"""The model gateway's added latency over calling the backend directly, with LiteLLM's
proxy in front of the same fake backend as the reference.

A fake Ollama (tests/fakes/ollama.py, answering at once) is called:
- directly (its Ollama API, and the OpenAI API it also serves under /v1);
- through `alai serve`'s gateway (embedded PostgreSQL; the usage records included);
- through LiteLLM's proxy (`litellm[proxy]` from PyPI, in a virtual environment of its
  own under /tmp; its OpenAI API, `openai/<model>` pointed at the fake's /v1);
- through a bare ASGI proxy (bench/gateway_floor_proxy.py: aiohttp, no framework, no
  token, no usage records) under the same uvicorn: the least a Python proxy adds here.
Requests are sent one after another from this process over keep-alive connections
(so each figure is a latency, not a throughput); rounds alternate between the paths.
Non-streaming: whole request. Streaming: time to the first content chunk (TTFT).
Added latency = path p50 − direct p50 (and p99 − p99). Targets (issue 6): p50 added
≤ 1 ms and less than a quarter of LiteLLM's.

    python bench/gateway_overhead.py [--requests 300] [--rounds 3] [--no-litellm]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from support import free_port, running_serve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "bench-gateway-token"
MODEL = "qwen3.5:27b"
LITELLM_VENV = Path("/tmp/alai-bench-litellm-venv")
LITELLM_KEY = "sk-bench-" + "5f" * 24


def ensure_litellm() -> Path | None:
    binary = LITELLM_VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    print("installing litellm[proxy] into its own virtual environment (once) …", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"], check=True,
                       stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as error:
        print(f"litellm could not be installed ({error}); its reference is skipped", flush=True)
        shutil.rmtree(LITELLM_VENV, ignore_errors=True)
        return None
    return binary


def wait_for(url: str, headers: dict | None = None, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def measure(client: httpx.Client, path: str, body: dict, headers: dict, *, stream: bool, n: int) -> list[float]:
    """Seconds per request (non-streaming) or to the first content chunk (streaming)."""
    out = []
    for _ in range(n):
        started = time.perf_counter()
        if stream:
            with client.stream("POST", path, json=body, headers=headers) as response:
                response.raise_for_status()
                lines = response.iter_lines()
                for line in lines:
                    if line.strip() and line.strip() != "data: [DONE]":
                        break
                out.append(time.perf_counter() - started)
                for _ in lines:  # the rest of the answer
                    pass
        else:
            response = client.post(path, json=body, headers=headers)
            response.raise_for_status()
            out.append(time.perf_counter() - started)
    return out


def pct(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-litellm", action="store_true")
    args = parser.parse_args()
    from tests.fakes.ollama import FakeOllamaProcess

    fake = FakeOllamaProcess("anvil", [MODEL])
    fake.start()
    litellm_process = None
    floor_port = free_port()
    floor_process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway_floor_proxy:app", "--port", str(floor_port), "--log-level",
         "warning", "--no-access-log"], cwd=Path(__file__).parent, env={**os.environ, "UPSTREAM": fake.url})
    try:
        with tempfile.TemporaryDirectory(prefix="alai-bench-gw-") as tmp:
            config = Path(tmp) / "gateway.yaml"
            config.write_text(f'backends: [{{name: anvil, kind: ollama, url: "{fake.url}"}}]\n')
            with running_serve(Path(tmp), token=TOKEN, extra_env={"ALAI_GATEWAY_CONFIG": str(config)}) as base:
                paths = {
                    "direct ollama": (fake.url, "/api/chat", {}),
                    "alai ollama": (base, "/api/chat", {"Authorization": f"Bearer {TOKEN}"}),
                    "direct openai": (fake.url, "/v1/chat/completions", {}),
                    "alai openai": (base, "/v1/chat/completions", {"Authorization": f"Bearer {TOKEN}"}),
                    "bare ollama": (f"http://127.0.0.1:{floor_port}", "/api/chat", {}),
                    "bare openai": (f"http://127.0.0.1:{floor_port}", "/v1/chat/completions", {}),
                }
                wait_for(f"http://127.0.0.1:{floor_port}/api/tags")
                binary = None if args.no_litellm else ensure_litellm()
                if binary is not None:
                    port = free_port()
                    litellm_config = Path(tmp) / "litellm.yaml"
                    litellm_config.write_text(
                        f"model_list:\n  - model_name: {MODEL}\n    litellm_params:\n"
                        f"      model: openai/{MODEL}\n      api_base: {fake.url}/v1\n      api_key: none\n")
                    litellm_process = subprocess.Popen(
                        [str(binary), "--config", str(litellm_config), "--port", str(port), "--host", "127.0.0.1",
                         "--num_workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        env={**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY})
                    wait_for(f"http://127.0.0.1:{port}/health/liveliness")
                    # Authenticated like ours: a master key, sent as a bearer token.
                    paths["litellm openai"] = (f"http://127.0.0.1:{port}", "/v1/chat/completions",
                                               {"Authorization": f"Bearer {LITELLM_KEY}"})
                samples: dict[tuple[str, bool], list[float]] = {(name, s): [] for name in paths for s in (False, True)}
                clients = {name: httpx.Client(base_url=url, timeout=30) for name, (url, _, _) in paths.items()}
                messages = [{"role": "user", "content": "hello there"}]
                for round_number in range(args.rounds):
                    for stream in (False, True):
                        for name, (_, path, headers) in paths.items():
                            body = {"model": MODEL, "messages": messages, "stream": stream}
                            if round_number == 0:  # warm-up
                                measure(clients[name], path, body, headers, stream=stream, n=20)
                            samples[(name, stream)] += measure(clients[name], path, body, headers, stream=stream,
                                                               n=args.requests)
                for client in clients.values():
                    client.close()
    finally:
        if litellm_process is not None:
            litellm_process.terminate()
            litellm_process.wait(30)
        floor_process.terminate()
        floor_process.wait(30)
        fake.kill()

    print(f"{args.rounds} rounds × {args.requests} sequential requests per path; {os.cpu_count()} cores")
    results = {}
    for stream in (False, True):
        kind = "time to first token" if stream else "non-streaming"
        for name in paths:
            values = samples[(name, stream)]
            print(f"{kind:<20} {name:<15} p50 {pct(values, 0.5):6.2f} ms  p99 {pct(values, 0.99):6.2f} ms")
        for surface in ("ollama", "openai"):
            direct = samples[(f"direct {surface}", stream)]
            for who in ("alai", "bare"):
                ours = samples[(f"{who} {surface}", stream)]
                key = surface if who == "alai" else f"bare {surface}"
                results[(key, stream)] = (pct(ours, 0.5) - pct(direct, 0.5), pct(ours, 0.99) - pct(direct, 0.99))
        if ("litellm openai", stream) in samples:
            direct = samples[("direct openai", stream)]
            theirs = samples[("litellm openai", stream)]
            results[("litellm", stream)] = (pct(theirs, 0.5) - pct(direct, 0.5), pct(theirs, 0.99) - pct(direct, 0.99))
    for (surface, stream), (p50, p99) in results.items():
        kind = "TTFT" if stream else "non-streaming"
        print(f"added by {surface:<12} ({kind:<13}): p50 {p50:+.2f} ms, p99 {p99:+.2f} ms")
    ours, theirs = results[("openai", False)], results.get(("litellm", False))
    versus = f"; LiteLLM adds {theirs[0]:.2f} ms ({ours[0] / theirs[0]:.0%} of it)" if theirs else ""
    print(f"gateway_overhead: alai adds p50 {results[('ollama', False)][0]:.2f} ms (Ollama API), "
          f"{ours[0]:.2f} ms (OpenAI API), TTFT {results[('ollama', True)][0]:.2f} ms{versus}; "
          f"a bare aiohttp proxy adds {results[('bare ollama', False)][0]:.2f} ms")


if __name__ == "__main__":
    main()
