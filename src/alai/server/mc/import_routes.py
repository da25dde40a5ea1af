"""POST /v1/mc/import: the legacy SQLite import for a remote control plane.

The body is the SQLite file itself (application/octet-stream or
application/vnd.sqlite3); `?map=` carries a mapping as JSON (what `--map` reads as YAML). It is spooled to a temporary file, at most 512 MiB, and
imported in one transaction; the answer is the ImportReport.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request

from alai.server.deps import Connection, Principal, require_scope
from alai.server.mc import importer
from alai.server.problems import ProblemError
from alai.server.settings import comma_list
from alai.wire.mc import ImportReport

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
ACCEPTED_TYPES = {"application/octet-stream", "application/vnd.sqlite3", "application/x-sqlite3"}
ADMIN = Depends(require_scope("admin"))


async def spool(request: Request, folder: Path) -> Path:
    """The body in a file; 413 as soon as it passes the limit."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES:
        raise ProblemError(413, f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; "
                                "import it with `alai admin import` beside the database")
    path = folder / "upload.db"
    size = 0
    # Plain writes: chunks are small and land in the page cache.
    with open(path, "wb") as handle:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise ProblemError(413, f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; "
                                        "import it with `alai admin import` beside the database")
            handle.write(chunk)
    if size == 0:
        raise ProblemError(422, "the request body is empty; send the SQLite file as the body")
    return path


@contextlib.asynccontextmanager
async def uploaded_file(request: Request, mapping: str | None, *, prefix: str) -> AsyncIterator[tuple[Path, dict | None]]:
    """(the spooled file, the parsed `?map=`) of an import upload, its media type checked;
    the file is gone when the block ends (the HiveMind import uses this too)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise ProblemError(415, "send the SQLite file as application/octet-stream or application/vnd.sqlite3")
    parsed = None
    if mapping:
        try:
            parsed = json.loads(mapping)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ProblemError(422, "map must be a JSON object (the mapping `--map` takes, as JSON)")
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield await spool(request, Path(folder)), parsed


def add_routes(router: APIRouter) -> None:
    """Adds POST /import to the mc module's router (one router: every route is walked
    by the security test and labelled in metrics with its full path)."""

    @router.post("/import", response_model=ImportReport, dependencies=[ADMIN])
    async def import_legacy_database(
        request: Request,
        conn: Connection,
        principal: Principal = ADMIN,
        dry_run: bool = Query(False, description="Report what would be imported, write nothing."),
        source_name: str = Query("upload", max_length=200, description="The file's name, for the report."),
        mapping: str | None = Query(None, alias="map", max_length=65536,
                                    description="The mapping (as `--map` takes it), JSON-encoded."),
    ) -> ImportReport:
        """Import a legacy Mission Control SQLite file (the request body); idempotent."""
        settings = request.app.state.settings
        async with uploaded_file(request, mapping, prefix="alai-mc-import-") as (path, parsed_mapping):
            async with conn.transaction():
                return await importer.import_legacy(
                    conn, path=path, mapping=parsed_mapping, dry_run=dry_run, actor=principal.name or principal.subject,
                    statuses=comma_list(settings.mc_statuses), closed_statuses=comma_list(settings.mc_closed_statuses),
                    source_name=source_name,
                )
