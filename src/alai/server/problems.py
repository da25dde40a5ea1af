"""Every error leaves the server as RFC 9457 problem+json.

Services raise `ProblemError` (or a subclass); FastAPI's own errors (404, 405, 422)
and anything unexpected are turned into the same shape here, with the request id
so that a user's report can be matched with the log line.
"""

from __future__ import annotations

from typing import Any, TypeVar

import psycopg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from alai.wire.problem import PROBLEM_MEDIA_TYPE, FieldError, Problem, problem_type

log = structlog.get_logger("alai.server")
ModelT = TypeVar("ModelT", bound=BaseModel)

# Stable problem types for plain HTTP statuses.
STATUS_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    412: "precondition-failed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation",
    428: "precondition-required",
    429: "too-many-requests",
    500: "internal",
    503: "unavailable",
}
TITLES = {
    400: "Bad request", 401: "Authentication required", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 406: "Not acceptable", 409: "Conflict", 412: "Precondition failed",
    413: "Payload too large", 415: "Unsupported media type", 422: "Invalid input",
    428: "Precondition required", 429: "Too many requests", 500: "Internal error", 503: "Service unavailable",
}


class ProblemError(Exception):
    """An error a client can act on. `slug` names the problem type (stable)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        title: str | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or STATUS_SLUGS.get(status, f"http-{status}")
        self.title = title or TITLES.get(status, "Error")
        self.errors = errors or []
        self.headers = headers or {}
        self.extensions = extensions


def request_id_of(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def problem_body(error: ProblemError, *, instance: str | None = None, request_id: str | None = None) -> dict[str, Any]:
    """The problem+json body of `error` (also what a batch answers per refused item)."""
    problem = Problem(
        type=problem_type(error.slug),
        title=error.title,
        status=error.status,
        detail=error.detail,
        instance=instance,
        request_id=request_id,
        errors=error.errors,
        **error.extensions,
    )
    return problem.model_dump(mode="json", exclude_none=True)


def problem_response(request: Request, error: ProblemError) -> JSONResponse:
    return JSONResponse(
        problem_body(error, instance=request.url.path, request_id=request_id_of(request)),
        status_code=error.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=error.headers,
    )


def _field_name(location: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in location)


async def _on_problem(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ProblemError)
    return problem_response(request, error)


async def _on_http_exception(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    status = error.status_code
    if status == 404 and error.detail in (None, "Not Found"):
        detail = f"no route for {request.method} {request.url.path}"
    elif status == 405 and error.detail in (None, "Method Not Allowed"):
        allowed = (error.headers or {}).get("Allow") or (error.headers or {}).get("allow")
        detail = f"{request.method} is not allowed here" + (f"; allowed: {allowed}" if allowed else "")
    else:
        detail = str(error.detail)
    return problem_response(request, ProblemError(status, detail, headers=dict(error.headers or {})))


async def _on_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    fields = [
        FieldError(field=_field_name(item.get("loc", ())), message=item.get("msg", "invalid"), type=item.get("type"))
        for item in error.errors()
    ]
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:5])
    return problem_response(request, ProblemError(422, f"invalid request: {summary}", errors=fields))


async def _on_database_unreachable(request: Request, error: Exception) -> JSONResponse:
    # The connection broke under the request (restart, failover). Nothing was
    # committed by it: the transaction died with the connection.
    log.warning("database error during request", error=str(error))
    return problem_response(
        request, ProblemError(503, "the database is not reachable right now; retry shortly", headers={"Retry-After": "5"})
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused with a 413 problem as soon as it is known to pass
    `limit` bytes (by its Content-Length, or while it streams in): never read whole."""
    def too_large() -> ProblemError:
        return ProblemError(413, f"the request body may hold at most {limit // (1024 * 1024)} MiB",
                            slug="payload-too-large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its own body: the body's schema, nested
    models written out in place (a model that is no route's parameter is not registered
    under components/schemas, so a reference to it would point at nothing)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def validated_body(model: type[ModelT], raw: bytes) -> ModelT:
    """A JSON body read by the endpoint itself (a direct route), validated as FastAPI
    would: the same 422 problem, with fields named `body.<field>`."""
    try:
        return model.model_validate_json(raw or b"null")
    except ValidationError as error:
        raise RequestValidationError(
            [{**item, "loc": ("body", *item.get("loc", ()))} for item in error.errors(include_url=False)]
        ) from None


async def _on_data_error(request: Request, error: Exception) -> JSONResponse:
    """A value PostgreSQL will not store (a NUL character, a number out of range) is the
    request's fault, not the server's: 422, naming the reason but not the value."""
    assert isinstance(error, psycopg.DataError)
    # The first line only: a DETAIL line may quote the value.
    reason = getattr(error.diag, "message_primary", None) or (str(error).splitlines() or ["invalid value"])[0]
    log.warning("a value was refused by the database", path=request.url.path, reason=reason)
    return problem_response(request, ProblemError(422, f"a value in the request cannot be stored: {reason}",
                                                  slug="unstorable-value"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(psycopg.OperationalError, _on_database_unreachable)
    app.add_exception_handler(psycopg.DataError, _on_data_error)
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)


def internal_error_body(request_id: str | None, path: str) -> dict[str, Any]:
    """The body of a 500: says nothing about the failure beyond the request id."""
    return Problem(
        type=problem_type("internal"),
        title=TITLES[500],
        status=500,
        detail="the server failed to handle this request; the log has the details under this request id",
        instance=path,
        request_id=request_id,
    ).model_dump(mode="json", exclude_none=True)
