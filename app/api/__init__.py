"""Wattline's HTTP API (Litestar), versioned under /api/v1.

Controllers stay thin: authentication is a middleware (app.api.keys), authorization
guards declared on each controller, logic in app.api.services, and every error an
RFC 9457 problem document. `create_app()` is the uvicorn factory
(`wattline api` or `uvicorn --factory app.api:create_app`).
"""

from __future__ import annotations

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsPlugin

from app.api.database import Database, provide_database
from app.api.health import HealthController
from app.api.ingest import IngestController
from app.api.keys import ApiKeyMiddleware
from app.api.problems import EXCEPTION_MAP

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 10 * 1024 * 1024


def create_app(database_url: str | None = None, *, max_body_bytes: int = MAX_BODY_BYTES) -> Litestar:
    """The application; the database is the configured one unless `database_url` says."""
    database = Database(database_url)
    return Litestar(
        route_handlers=[HealthController, IngestController],
        dependencies={"database": Provide(provide_database, sync_to_thread=False)},
        middleware=[DefineMiddleware(ApiKeyMiddleware, exclude=["^/schema"])],
        plugins=[ProblemDetailsPlugin(ProblemDetailsConfig(
            enable_for_all_http_exceptions=True, exception_to_problem_detail_map=EXCEPTION_MAP,
        ))],
        on_startup=[database.open],
        on_shutdown=[database.close],
        state=State({"database": database}),
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(title="Wattline API", version="1.0.0", path="/schema"),
    )
