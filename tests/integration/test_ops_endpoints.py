"""Health, readiness, metrics, status and the problem+json shape of every error."""

import httpx
import pytest
from fastapi import APIRouter, Depends
from pydantic import BaseModel, SecretStr

from alai.server.app import create_app
from alai.server.deps import Principal, require_scope
from alai.server.settings import Settings
from alai.wire.ops import StatusReport
from alai.wire.problem import PROBLEM_MEDIA_TYPE, Problem


def assert_problem(response: httpx.Response, status: int, slug: str) -> Problem:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    problem = Problem.model_validate(response.json())
    assert problem.status == status
    assert problem.slug == slug
    assert problem.detail
    assert problem.request_id == response.headers["x-request-id"]
    return problem


async def test_healthz_needs_no_token(anonymous_client):
    response = await anonymous_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_when_database_and_schema_are_current(anonymous_client):
    response = await anonymous_client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "reasons": []}


async def test_readyz_is_503_with_the_reason_when_migrations_are_pending(empty_database_url, tmp_path):
    settings = Settings(database_url=SecretStr(empty_database_url), data_dir=tmp_path, migrate_on_start=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            response = await http.get("/readyz")
    problem = assert_problem(response, 503, "not-ready")
    assert "migration(s) pending" in problem.detail and "alai admin migrate" in problem.detail
    assert response.headers["retry-after"] == "5"


async def test_readyz_is_503_when_the_database_is_unreachable(tmp_path):
    settings = Settings(
        database_url=SecretStr("postgresql://postgres@127.0.0.1:1/alai?connect_timeout=1"),
        data_dir=tmp_path, migrate_on_start=False, db_pool_min=0, admin_token=SecretStr("t"), db_connect_timeout=1,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
            ready = await http.get("/readyz")
            status = await http.get("/v1/status", headers={"Authorization": "Bearer t"})
            health = await http.get("/healthz")
    problem = assert_problem(ready, 503, "not-ready")
    assert "database not reachable" in problem.detail and "refused" in problem.detail.lower()
    assert health.status_code == 200  # liveness is about the process, not the database
    assert status.status_code == 200
    report = StatusReport.model_validate(status.json())
    assert report.state == "down" and report.database.state == "down"


async def test_metrics_count_requests_by_route_template_and_status(client, anonymous_client):
    await client.get("/v1/status")
    await anonymous_client.get("/v1/status")
    await anonymous_client.get("/no/such/route/123")
    response = await anonymous_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'alai_http_requests_total{method="GET",route="/v1/status",status="200"} 1.0' in text
    assert 'alai_http_requests_total{method="GET",route="/v1/status",status="401"} 1.0' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "/no/such/route/123" not in text  # raw paths would be unbounded label values
    assert 'alai_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/status"}' in text
    assert "alai_db_pool_size " in text and "alai_db_pool_available " in text and "alai_db_pool_max 4.0" in text


async def test_status_reports_database_modules_and_this_replica(client, app):
    response = await client.get("/v1/status")
    assert response.status_code == 200
    report = StatusReport.model_validate(response.json())
    assert report.state == "ok"
    assert report.database.state == "ok"
    assert report.database.migrations.applied >= 1 and report.database.migrations.pending == []
    assert report.database.server_version
    assert [m.name for m in report.modules] == [m.name for m in app.state.modules]
    assert report.instance_id in [i.id for i in report.instances]


async def test_status_needs_a_token_and_a_valid_one(anonymous_client):
    missing = await anonymous_client.get("/v1/status")
    problem = assert_problem(missing, 401, "unauthorized")
    assert "alai login" in problem.detail
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = await anonymous_client.get("/v1/status", headers={"Authorization": "Bearer not-the-token"})
    assert_problem(wrong, 401, "unauthorized")
    malformed = await anonymous_client.get("/v1/status", headers={"Authorization": "Basic abc"})
    assert_problem(malformed, 401, "unauthorized")


async def test_errors_are_problem_json_404_405(anonymous_client):
    assert_problem(await anonymous_client.get("/nowhere"), 404, "not-found")
    problem = assert_problem(await anonymous_client.delete("/healthz"), 405, "method-not-allowed")
    assert "GET" in problem.detail


class Widget(BaseModel):
    name: str
    count: int


@pytest.fixture
async def app_with_extra_routes(settings):
    """The app plus a router of the kind modules add, to exercise 422 and 500."""
    app = create_app(settings)
    router = APIRouter()

    @router.post("/v1/test/widgets", dependencies=[Depends(require_scope("test:write"))])
    async def create_widget(widget: Widget, limit: int = 10) -> Widget:
        return widget

    @router.get("/v1/test/boom", dependencies=[Depends(require_scope("test:read"))])
    async def boom() -> None:
        raise RuntimeError("secret internals postgresql://u:pw@h/db")

    app.include_router(router)
    async with app.router.lifespan_context(app):
        yield app


async def test_invalid_input_is_422_with_field_errors(app_with_extra_routes):
    from tests.conftest import ADMIN_TOKEN

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with_extra_routes), base_url="http://t",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        response = await http.post("/v1/test/widgets?limit=many", json={"name": "x", "count": "lots"})
        not_json = await http.post("/v1/test/widgets", content=b"{not json", headers={"content-type": "application/json"})
    problem = assert_problem(response, 422, "validation")
    fields = {error.field for error in problem.errors}
    assert fields == {"query.limit", "body.count"}
    assert_problem(not_json, 422, "validation")


async def test_unexpected_errors_are_500_problem_without_internals(app_with_extra_routes, capfd):
    from tests.conftest import ADMIN_TOKEN

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with_extra_routes), base_url="http://t",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Request-ID": "trace-42"}) as http:
        response = await http.get("/v1/test/boom")
    problem = assert_problem(response, 500, "internal")
    assert problem.request_id == "trace-42"
    assert "secret internals" not in response.text and "Traceback" not in response.text


async def test_scope_is_enforced_with_403(app_with_extra_routes):
    async def reader_only(_request, token):
        if token == "reader":
            return Principal(subject="r", kind="test", scopes=frozenset({"test:read"}), name="reader")
        return None

    app_with_extra_routes.state.authenticators.append(reader_only)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_with_extra_routes), base_url="http://t",
                                 headers={"Authorization": "Bearer reader"}) as http:
        response = await http.post("/v1/test/widgets", json={"name": "x", "count": 1})
    problem = assert_problem(response, 403, "forbidden")
    assert "test:write" in problem.detail


async def test_request_id_is_echoed_or_made(anonymous_client):
    given = await anonymous_client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    hostile = await anonymous_client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"] != "bad id\twith spaces"
    assert len(hostile.headers["x-request-id"]) == 32


async def test_openapi_document_is_served_behind_a_token(client, anonymous_client):
    assert (await anonymous_client.get("/v1/openapi.json")).status_code == 401
    document = (await client.get("/v1/openapi.json")).json()
    assert "/v1/status" in document["paths"] and "/readyz" in document["paths"]

    def refs(node):
        if isinstance(node, dict):
            yield from ([node["$ref"]] if isinstance(node.get("$ref"), str) else [])
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for item in node:
                yield from refs(item)
    for ref in set(refs(document)):  # every reference points at something in the document
        target = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(target, dict) and part in target, ref
            target = target[part]
    batch = document["paths"]["/v1/hive/topics/{topic}/batch"]["post"]["requestBody"]
    assert "messages" in batch["content"]["application/json"]["schema"]["properties"]
