"""The gateway's own API: its configuration (no secrets) and what routes where right now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from fastapi import Depends, Request

from alai.server.deps import Connection, Principal, actor_name, require_scope
from alai.server.gateway import usage
from alai.server.gateway.backends import redact_url
from alai.server.gateway.proxy import Gateway, ModelNotFound, Unavailable
from alai.server.problems import ProblemError

USE = Depends(require_scope("gateway:use"))


def add_routes(router) -> None:
    @router.get("/v1/gateway/usage", tags=["gateway"])
    async def usage_summary(request: Request, conn: Connection, since: datetime | None = None,
                            by: Literal["backend", "model", "principal", "day"] = "model",
                            principal: str | None = None,
                            caller: Principal = Depends(require_scope("gateway:use"))) -> dict:
        """Requests, errors, tokens, cost and latency since `since` (default: 30 days), per `by`.
        Administrators see everyone (or `principal`); others see their own use."""
        await request.app.state.gateway_usage.flush()  # what has just been answered counts too
        if not caller.has_scope("admin"):
            if principal is not None and principal != actor_name(caller):
                raise ProblemError(403, "only administrators see other principals' usage", slug="forbidden")
            principal = actor_name(caller)
        start = since or datetime.now(UTC) - timedelta(days=30)
        rows = await usage.summary(conn, since=start, by=by, principal=principal)
        return {"since": start.isoformat(), "by": by, "principal": principal, "rows": rows,
                "total": {"requests": sum(r["requests"] for r in rows), "errors": sum(r["errors"] for r in rows),
                          "tokens_in": sum(r["tokens_in"] for r in rows),
                          "tokens_out": sum(r["tokens_out"] for r in rows),
                          "cost_usd": round(sum(r["cost_usd"] for r in rows), 6)}}

    @router.get("/v1/gateway/config", dependencies=[USE], tags=["gateway"])
    async def config(request: Request) -> dict:
        """The configuration in force; API keys appear only as whether one is set."""
        gateway: Gateway = request.app.state.gateway
        data = gateway.config.model_dump(mode="json", exclude={"backends": {"__all__": {"api_key"}}})
        for backend, out in zip(gateway.config.backends, data["backends"], strict=True):
            out["api_key_set"] = backend.api_key is not None
            out["url"] = redact_url(backend.url)
        return data

    @router.get("/v1/gateway/status", dependencies=[USE], tags=["gateway"])
    async def status(request: Request) -> dict:
        """Each backend (up or down, since when, why) and where each configured model goes now."""
        gateway: Gateway = request.app.state.gateway
        backends = [{"name": s.name, "kind": s.config.kind, "url": redact_url(s.config.url), "up": s.up,
                     "since": s.since.isoformat(), "reason": s.reason, "models": len(s.models),
                     "checked_at": s.checked_at.isoformat() if s.checked_at else None}
                    for s in gateway.backends.states.values()]
        models = {}
        for name in gateway.config.models:
            try:
                first = gateway.attempts(name)[0]
                models[name] = {"state": "routed", "backend": first.state.name, "upstream_model": first.upstream_model}
            except Unavailable as error:
                models[name] = {"state": "paused" if error.paused else "unavailable", "detail": error.detail,
                                "retry_after": error.retry_after}
            except ModelNotFound:  # pragma: no cover - configured models always have routes
                models[name] = {"state": "unknown"}
        return {"backends": backends, "models": models}
