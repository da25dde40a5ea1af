"""POST /v1/hive/import (a legacy hivemind.db for a remote control plane) and
GET /v1/hive/agents (the agents it brought, read-only).

The upload is handled as Mission Control's (`mc.import_routes`): the body is the
SQLite file (application/octet-stream or application/vnd.sqlite3), spooled to a
temporary file of at most 512 MiB; `?map=` carries a mapping as JSON (what `--map`
reads as YAML); the import runs in one transaction; the answer is the report.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from alai.server.deps import Connection, Principal, actor_name, require_scope
from alai.server.hive import importer
from alai.server.mc import import_routes as mc_import_routes
from alai.wire.hive import Agent, HiveImportReport

ADMIN = Depends(require_scope("admin"))
READ = Depends(require_scope("hive:read"))


def add_routes(router: APIRouter) -> None:
    """Adds POST /import and GET /agents to the hive module's router."""

    @router.post("/import", response_model=HiveImportReport, dependencies=[ADMIN])
    async def import_legacy_database(
        request: Request,
        conn: Connection,
        principal: Principal = ADMIN,
        dry_run: bool = Query(False, description="Report what would be imported, write nothing."),
        source_name: str = Query("upload", max_length=200, description="The file's name, for the report."),
        mapping: str | None = Query(None, alias="map", max_length=65536,
                                    description="The mapping (as `--map` takes it), JSON-encoded."),
    ) -> HiveImportReport:
        """Import a legacy hivemind.db (the request body); idempotent."""
        async with mc_import_routes.uploaded_file(request, mapping, prefix="alai-hive-import-") as (
                path, parsed_mapping):
            async with conn.transaction():
                report = await importer.import_legacy(conn, path=path, mapping=parsed_mapping, dry_run=dry_run,
                                                      actor=actor_name(principal), source_name=source_name)
        request.app.state.hive_notifier.mark()  # after the commit: this replica's subscribers at once
        return report

    @router.get("/agents", response_model=list[Agent], dependencies=[READ])
    async def agents(conn: Connection) -> list[Agent]:
        """The agents' registry (imported from hivemind.db)."""
        return await importer.list_agents(conn)
