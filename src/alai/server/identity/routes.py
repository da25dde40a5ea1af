"""Identity over HTTP: the built-in OIDC endpoints (public) and /v1/identity (scoped)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from alai.server.deps import Connection, Principal, api_router, public, require_scope
from alai.server.identity import external, oauth, pages, service, throttle
from alai.server.identity.service import OAuthError
from alai.server.problems import ProblemError
from alai.wire.identity import CLI_CLIENT_ID, ApiToken, ApiTokenCreate, ApiTokenCreated, LoginConfig, Me, User

AUTHORIZE_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "code_challenge",
                    "code_challenge_method")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PAGE_HEADERS = {**NO_STORE, "X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
                "Referrer-Policy": "no-referrer"}


def _builtin_only(request: Request) -> None:
    if request.app.state.settings.external_oidc:
        raise ProblemError(404, "this control plane signs in through an external identity provider; "
                                "see /.well-known/alai-login")


def _oauth_error(error: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if error.status == 401:
        headers["WWW-Authenticate"] = "Basic"
    return JSONResponse({"error": error.error, "error_description": error.description}, status_code=error.status,
                        headers=headers)


def router_factory() -> APIRouter:
    router = api_router(tags=["identity"])

    @router.get("/.well-known/openid-configuration")
    @public
    async def discovery(request: Request) -> dict[str, Any]:
        """OpenID Provider metadata of the built-in issuer."""
        _builtin_only(request)
        issuer = request.app.state.settings.issuer
        return {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/oauth/authorize",
            "token_endpoint": f"{issuer}/oauth/token",
            "revocation_endpoint": f"{issuer}/oauth/revoke",
            "jwks_uri": f"{issuer}/.well-known/jwks.json",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid", "offline_access", "profile", "email"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "name", "email", "scope"],
            "authorization_response_iss_parameter_supported": True,
        }

    @router.get("/.well-known/jwks.json")
    @public
    async def jwks(request: Request) -> JSONResponse:
        """Public keys that verify the built-in issuer's tokens (the active and recently retired ones)."""
        _builtin_only(request)
        return JSONResponse(request.app.state.keyring.jwks(), headers={"Cache-Control": "public, max-age=300"})

    @router.get("/.well-known/alai-login", response_model=LoginConfig)
    @public
    async def login_config(request: Request) -> LoginConfig:
        """Tells `alai login` where to sign in: the built-in issuer or the external one."""
        settings = request.app.state.settings
        verifier: external.ExternalVerifier | None = request.app.state.external_verifier
        if verifier is None:
            return LoginConfig(mode="builtin", issuer=settings.issuer, client_id=CLI_CLIENT_ID,
                               discovery_url=f"{settings.issuer}/.well-known/openid-configuration",
                               scopes="openid offline_access")
        if not settings.oidc_client_id:
            raise ProblemError(503, "ALAI_OIDC_CLIENT_ID is not set, so the CLI cannot sign in here")
        try:
            document = await verifier.discovery()
        except external.ExternalIssuerUnavailable as error:
            raise ProblemError(503, str(error), headers={"Retry-After": "10"}) from None
        return LoginConfig(mode="external", issuer=settings.oidc_issuer or document.get("issuer", ""),
                           discovery_url=verifier.discovery_url, client_id=settings.oidc_client_id,
                           scopes=settings.oidc_scopes)

    @router.get("/oauth/authorize", response_class=HTMLResponse)
    @public
    async def authorize_page(request: Request) -> Response:
        """The sign-in page of an authorization request (or an error page / error redirect)."""
        _builtin_only(request)
        params = {key: request.query_params[key] for key in AUTHORIZE_PARAMS if key in request.query_params}
        return _authorization_step(params, None)

    @router.post("/oauth/authorize", response_class=HTMLResponse)
    @public
    async def authorize_submit(request: Request, conn: Connection) -> Response:
        """Checks the credentials of the sign-in form; on success redirects with a code."""
        _builtin_only(request)
        form = await request.form()
        params = {key: str(form[key]) for key in AUTHORIZE_PARAMS if key in form}
        early = _authorization_step(params, None, render=False)
        if early is not None:
            return early
        username, password = str(form.get("username") or ""), str(form.get("password") or "")
        by_user: throttle.FailureLimiter = request.app.state.sign_in_failures_by_user
        by_address: throttle.FailureLimiter = request.app.state.sign_in_failures_by_address
        checks = ((by_user, username.strip().lower()), (by_address, request.client.host if request.client else "?"))
        waits = [wait for limiter, key in checks if (wait := limiter.retry_after(key)) is not None]
        if waits:
            response = _authorization_step(
                params, f"Too many failed sign-ins; try again in {max(waits)} seconds.", username=username,
                status=429)
            response.headers["Retry-After"] = str(max(waits))
            return response
        async with conn.transaction():
            user = await service.authenticate_password(conn, username=username, password=password)
            if user is None:
                for limiter, key in checks:
                    limiter.failed(key)
                return _authorization_step(params, "Wrong username or password.", username=username, status=401)
            by_user.succeeded(checks[0][1])
            code = await oauth.issue_code(conn, params=params, user=user)
        target = oauth.success_redirect(params["redirect_uri"], code, params["state"],
                                        request.app.state.settings.issuer)
        return RedirectResponse(target, status_code=302, headers=PAGE_HEADERS)

    @router.post("/oauth/token")
    @public
    async def token(request: Request, conn: Connection) -> JSONResponse:
        """Token endpoint: authorization_code (with PKCE) and refresh_token (rotated)."""
        _builtin_only(request)
        form = {key: str(value) for key, value in (await request.form()).items()}
        settings = request.app.state.settings
        failure: OAuthError | None = None
        # Errors are caught inside the transaction on purpose: a reused code or refresh
        # token revokes its family, and that revocation must commit with the refusal.
        async with conn.transaction():
            try:
                body = await oauth.exchange(
                    conn, form=form, keyring=request.app.state.keyring, issuer=settings.issuer,
                    access_ttl=settings.access_token_ttl_seconds,
                    refresh_lifetime=timedelta(days=settings.refresh_token_ttl_days),
                )
            except OAuthError as error:
                failure = error
        if failure is not None:
            return _oauth_error(failure)
        return JSONResponse(body, headers=NO_STORE)

    @router.post("/oauth/revoke")
    @public
    async def revoke(request: Request, conn: Connection) -> Response:
        """RFC 7009: revoking a refresh token ends its session. Always 200."""
        _builtin_only(request)
        form = await request.form()
        token_value = str(form.get("token") or "")
        if token_value:
            async with conn.transaction():
                await service.revoke_refresh_token(conn, token=token_value)
        return Response(status_code=200, headers=NO_STORE)

    @router.get("/v1/identity/me", response_model=Me)
    async def me(principal: Principal = Depends(require_scope("profile"))) -> Me:
        """Who the bearer token belongs to, and what it may do."""
        email = principal.name if principal.name and "@" in principal.name else None
        return Me(subject=principal.subject, kind=principal.kind, name=principal.name, email=email,
                  scopes=sorted(principal.scopes), via=principal.kind)

    @router.get("/v1/identity/tokens", response_model=list[ApiToken], dependencies=[Depends(require_scope("admin"))])
    async def list_tokens(conn: Connection, include_revoked: bool = False) -> list[ApiToken]:
        """API tokens (never their values)."""
        return await service.list_api_tokens(conn, include_revoked=include_revoked)

    @router.post("/v1/identity/tokens", response_model=ApiTokenCreated, status_code=201)
    async def create_token(body: ApiTokenCreate, conn: Connection,
                           principal: Principal = Depends(require_scope("admin"))) -> ApiTokenCreated:
        """Creates an API token for a node, agent or script; the value is in this response only."""
        async with conn.transaction():
            return await service.create_api_token(
                conn, name=body.name, scopes=body.scopes, created_by=principal.name or principal.subject,
                expires_in=timedelta(days=body.expires_in_days) if body.expires_in_days else None,
            )

    @router.delete("/v1/identity/tokens/{token_id}", response_model=ApiToken,
                   dependencies=[Depends(require_scope("admin"))])
    async def revoke_token(token_id: str, conn: Connection) -> ApiToken:
        """Revokes an API token (it stops working within seconds on every replica)."""
        async with conn.transaction():
            return await service.revoke_api_token(conn, token_id=token_id)

    @router.get("/v1/identity/users", response_model=list[User], dependencies=[Depends(require_scope("admin"))])
    async def list_users(conn: Connection) -> list[User]:
        """Local users, including those mapped from an external issuer."""
        return await service.list_users(conn)

    return router


def _authorization_step(params: dict[str, str], error: str | None, *, render: bool = True, username: str = "",
                        status: int = 200) -> Response | None:
    """Validates an authorization request; returns the page (or error) to show, or None to go on."""
    try:
        client = oauth.check_client(params.get("client_id"), params.get("redirect_uri"))
    except oauth.InvalidClientRequest as problem:
        return HTMLResponse(pages.error_page(str(problem)), status_code=400, headers=PAGE_HEADERS)
    try:
        oauth.check_authorization_request(params)
    except OAuthError as problem:
        return RedirectResponse(oauth.error_redirect(params["redirect_uri"], problem, params.get("state")),
                                status_code=302, headers=PAGE_HEADERS)
    if not render:
        return None
    return HTMLResponse(pages.login_page(params=params, client_name=client.name, error=error, username=username),
                        status_code=status, headers=PAGE_HEADERS)

