"""What a worker advertises: the models it can serve and the commands it offers."""

from __future__ import annotations

import httpx

from alai.wire.runs import model_capability


async def ollama_models(client: httpx.AsyncClient, base_url: str) -> list[str] | None:
    """The models of an Ollama (/api/tags); None when it does not answer."""
    try:
        response = await client.get(f"{base_url.rstrip('/')}/api/tags", timeout=5.0)
        response.raise_for_status()
        return sorted({item.get("name") or item.get("model") for item in response.json().get("models", [])} - {None})
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


async def cloud_models(client: httpx.AsyncClient, server: str, token: str) -> list[str] | None:
    """Models the gateway can answer from a cloud backend (any route on a non-Ollama backend)."""
    try:
        response = await client.get(f"{server.rstrip('/')}/v1/gateway/config",
                                    headers={"Authorization": f"Bearer {token}"}, timeout=10.0)
        response.raise_for_status()
        config = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    cloud = {backend["name"] for backend in config.get("backends", []) if backend.get("kind") != "ollama"}
    return sorted(name for name, model in config.get("models", {}).items()
                  if any(route.get("backend") in cloud for route in model.get("routes", [])))


def capabilities(models: list[str], commands: dict[str, str]) -> list[str]:
    found = {model_capability(model) for model in models}
    if models:
        found.add("executor:llm")
    if commands:
        found.add("executor:command")
        found.update(f"command:{name}" for name in commands)
    return sorted(found)
