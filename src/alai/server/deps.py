"""What routes depend on: the caller's identity and scopes, and a database connection.

Every route declares its scope with `Depends(require_scope("mc:read"))`; the route
walk test checks that none is missing. Who a bearer token belongs to is decided by
the authenticators registered on the app (`app.state.authenticators`): the static
admin token here, and whatever the identity module adds (JWTs, API tokens).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, WebSocket
from fastapi.routing import APIRoute
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout

from alai.server.problems import ProblemError

ADMIN_SCOPE = "admin"
PUBLIC_PATHS_ATTRIBUTE = "alai_public"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, a service account, a node or an agent."""

    subject: str
    kind: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    name: str | None = None
    # An agent's run token: the secret paths (globs) its definition lists; nothing else.
    secret_paths: tuple[str, ...] = ()

    def has_scope(self, scope: str) -> bool:
        return ADMIN_SCOPE in self.scopes or scope in self.scopes


# Returns the principal a token belongs to, or None if the token is not of its kind.
Authenticator = Callable[[Request, str], Awaitable[Principal | None]]


def static_token_authenticator(token: str, *, subject: str = "admin-token") -> Authenticator:
    expected = token.encode()

    async def authenticate(_: Request, presented: str) -> Principal | None:
        if hmac.compare_digest(presented.encode(), expected):
            return Principal(subject=subject, kind="static", scopes=frozenset({ADMIN_SCOPE}), name=subject)
        return None

    return authenticate


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="alai"'})


async def current_principal(request: Request) -> Principal:
    cached = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    token = bearer_token(request)
    if token is None:
        raise _unauthorized("this endpoint needs a bearer token; run `alai login`, or pass one with ALAI_TOKEN")
    for authenticate in request.app.state.authenticators:
        principal = await authenticate(request, token)
        if principal is not None:
            request.state.principal = principal
            return principal
    raise _unauthorized("the bearer token is not valid (unknown, expired or revoked); run `alai login` again")


def _check_scope(principal: Principal, scope: str) -> None:
    if not principal.has_scope(scope):
        raise ProblemError(
            403, f"this needs the scope {scope!r}, which {principal.name or principal.subject} does not have",
            required_scope=scope,
        )


async def check_scopes(request: Request, scopes: Sequence[str]) -> None:
    """The caller must hold every one of `scopes` (401 without a valid token, 403 without a scope)."""
    if scopes:
        principal = await current_principal(request)
        for scope in scopes:
            _check_scope(principal, scope)


def require_scope(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that admits only principals holding `scope` (or `admin`)."""

    async def dependency(request: Request) -> Principal:
        principal = await current_principal(request)
        _check_scope(principal, scope)
        return principal

    dependency.alai_scope = scope  # type: ignore[attr-defined]  # read by the route walk test
    return dependency


class ScopedRoute(APIRoute):
    """A route whose `dependencies=[Depends(require_scope(...))]` is checked before the
    handler runs, outside FastAPI's dependency solver.

    Same declaration, same 401/403 answers; it only skips the per-request cost of
    solving a dependency (measured by bench/auth.py). Routes that also need the
    principal as an argument declare `principal: Principal = Depends(require_scope(...))`
    as usual; that one is solved by FastAPI (and finds the principal already cached).
    """

    def __init__(self, path: str, endpoint: Callable, *, dependencies: Sequence[Any] | None = None,
                 **kwargs: Any) -> None:
        kept, scopes = [], []
        for dependency in dependencies or ():
            scope = getattr(getattr(dependency, "dependency", None), "alai_scope", None)
            (scopes if scope else kept).append(scope or dependency)
        self.alai_scopes: tuple[str, ...] = tuple(scopes)
        super().__init__(path, endpoint, dependencies=kept, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scopes = self.alai_scopes
        if not scopes:
            return handler

        async def scoped_handler(request: Request) -> Response:
            await check_scopes(request, scopes)
            return await handler(request)

        return scoped_handler


def api_router(**kwargs: Any) -> APIRouter:
    """The APIRouter every module uses (scopes checked by ScopedRoute)."""
    return APIRouter(route_class=ScopedRoute, **kwargs)


async def authenticate_websocket(websocket: WebSocket, scope: str) -> Principal | None:
    """Checks a WebSocket's bearer token (header, or `access_token` query parameter for
    clients that cannot set headers) before accepting it. On failure the handshake is
    refused with the problem's HTTP status (401/403) and None is returned."""
    header = websocket.headers.get("authorization", "")
    token = header.partition(" ")[2].strip() if header.lower().startswith("bearer ") else None
    token = token or websocket.query_params.get("access_token")
    try:
        if not token:
            raise _unauthorized("this stream needs a bearer token (Authorization header or access_token)")
        principal = None
        for authenticate in websocket.app.state.authenticators:
            principal = await authenticate(websocket, token)  # type: ignore[arg-type]
            if principal is not None:
                break
        if principal is None:
            raise _unauthorized("the bearer token is not valid (unknown, expired or revoked); run `alai login` again")
        _check_scope(principal, scope)
    except ProblemError as error:
        from fastapi.responses import JSONResponse

        from alai.wire.problem import Problem, problem_type

        body = Problem(type=problem_type(error.slug), title=error.title, status=error.status, detail=error.detail)
        try:
            await websocket.send_denial_response(
                JSONResponse(body.model_dump(exclude_none=True), status_code=error.status,
                             media_type="application/problem+json"))
        except RuntimeError:  # the server cannot send HTTP responses on a WebSocket
            await websocket.close(code=1008, reason=error.detail[:120])
        return None
    return principal


def if_match_version(value: str | None) -> int | None:
    """The version in an If-Match header (`"3"`, `W/"3"`); None for absent or `*`."""
    if value is None or value.strip() == "*":
        return None
    try:
        return int(value.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise ProblemError(400, 'If-Match must be an ETag this API gave out, like "3"', slug="bad-if-match") from None


def actor_name(principal: Principal) -> str:
    """How a principal is recorded as the author of a change."""
    return principal.name or principal.subject


def public(endpoint: Callable) -> Callable:
    """Marks a route as reachable without a token (health, metrics, OIDC discovery)."""
    setattr(endpoint, PUBLIC_PATHS_ATTRIBUTE, True)
    return endpoint


async def connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """A pooled connection (autocommit) for the duration of the request."""
    pool = request.app.state.pool
    try:
        conn = await pool.getconn()
    except PoolTimeout as error:
        raise ProblemError(
            503, "the database is not reachable right now; retry shortly", headers={"Retry-After": "5"}
        ) from error
    try:
        yield conn
    finally:
        await pool.putconn(conn)


Connection = Annotated[AsyncConnection, Depends(connection)]
