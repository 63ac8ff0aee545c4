"""POST /api/v1/ingest: readings pushed by meters, gateways and other systems."""

from __future__ import annotations

import anyio
from litestar import Controller, Request, post
from litestar.di import NamedDependency

from app.api.database import Database
from app.api.security import requires_scope
from app.api.services import ingest as service
from app.api.services.ingest import IngestResult


class IngestController(Controller):
    path = "/api/v1/ingest"
    guards = [requires_scope("ingest")]
    tags = ["ingest"]

    @post(
        operation_id="ingestReadings",
        summary="Push a batch of readings (JSON or CSV), all or nothing",
        description=(
            'JSON: `[{"point": "<key, name or id>", "ts": "<ISO 8601 or epoch s/ms>", "value": 1.5}]` '
            'or `{"readings": [...]}`; CSV (`Content-Type: text/csv`): header `point,ts,value`. '
            "Naive timestamps are UTC. Any invalid reading rejects the whole batch (422, every "
            "error listed with row, field, value and reason). Readings already stored count as duplicates."
        ),
        status_code=200,
    )
    async def ingest(self, request: Request, database: NamedDependency[Database]) -> IngestResult:
        body = await request.body()  # raw: JSON and CSV share the route
        return await anyio.to_thread.run_sync(
            service.ingest_body, database, body, request.headers.get("content-type", ""), request.auth
        )
