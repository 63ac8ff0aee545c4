"""Liveness and database reachability, for load balancers and the run command."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Controller, Response, get
from litestar.di import NamedDependency

from app.api.database import Database


@dataclass
class Health:
    status: str    # "ok" or "degraded"
    database: str  # "ok" or "unreachable"


class HealthController(Controller):
    path = "/api/v1/health"
    opt = {"exclude_from_auth": True}
    tags = ["operations"]

    @get(operation_id="health", summary="Service and database health", sync_to_thread=True)
    def health(self, database: NamedDependency[Database]) -> Response[Health]:
        try:
            with database.connection(timeout_s=2) as conn:
                conn.execute("SELECT 1")
        except Exception:
            return Response(Health("degraded", "unreachable"), status_code=503)
        return Response(Health("ok", "ok"))
