"""The app `bench/auth.py` serves: the real control plane plus two no-op routes.

`/bench/open` needs nothing; `/bench/auth` needs a bearer token with the `profile`
scope. The difference between them is what authentication costs per request.
"""

from __future__ import annotations

from fastapi import Depends

from alai.server.app import create_app
from alai.server.deps import api_router, require_scope
from alai.server.settings import Settings


def build():
    app = create_app(Settings())
    router = api_router()

    @router.get("/bench/open")
    async def open_route() -> dict[str, bool]:
        return {"ok": True}

    @router.get("/bench/auth", dependencies=[Depends(require_scope("profile"))])
    async def auth_route() -> dict[str, bool]:
        return {"ok": True}

    app.include_router(router)
    return app
