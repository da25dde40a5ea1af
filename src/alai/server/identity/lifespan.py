"""Start-up and background work of the identity module."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from fastapi import FastAPI

from alai.server.background import periodic
from alai.server.identity import authn, external, keys, service, throttle

log = structlog.get_logger("alai.identity")


@contextlib.asynccontextmanager
async def identity_lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    keyring = keys.KeyRing(longest_token_lifetime=timedelta(seconds=settings.access_token_ttl_seconds))
    app.state.keyring = keyring
    # Failed sign-ins allowed in 5 minutes (per replica): 10 per username, 50 per address.
    app.state.sign_in_failures_by_user = throttle.FailureLimiter(limit=10, window_seconds=300)
    app.state.sign_in_failures_by_address = throttle.FailureLimiter(limit=50, window_seconds=300)

    async def load_keys() -> None:
        async with app.state.pool.connection(timeout=min(5.0, settings.db_connect_timeout)) as conn:
            if keyring.active is None:
                async with conn.transaction():
                    await keys.ensure_active_key(conn)
            await keyring.reload(conn)

    try:
        await load_keys()
    except Exception as error:
        # Database away or schema not migrated yet: /readyz says so, and the periodic
        # reload below finishes the job once it can. Until then no JWT verifies.
        log.warning("signing keys not loaded yet", error=str(error).splitlines()[0] if str(error) else repr(error))

    verifier = external.ExternalVerifier(settings) if settings.external_oidc else None
    app.state.external_verifier = verifier
    # Order matters only for speed: each authenticator ignores tokens not of its kind.
    added = [authn.api_token_authenticator(app), authn.builtin_jwt_authenticator(app)]
    if verifier is not None:
        added.append(authn.external_jwt_authenticator(app, verifier))
    app.state.authenticators[:0] = added

    async def prune() -> None:
        async with app.state.pool.connection(timeout=5) as conn:
            await service.prune_expired(conn)

    try:
        async with periodic("identity-keys", keys.KeyRing.RELOAD_INTERVAL, load_keys), \
                periodic("identity-prune", 3600, prune):
            yield
    finally:
        for authenticate in added:
            if authenticate in app.state.authenticators:
                app.state.authenticators.remove(authenticate)
        if verifier is not None:
            await verifier.close()
