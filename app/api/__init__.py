"""Wattline's HTTP API (Litestar), versioned under /api/v1.

Controllers stay thin: authentication is a middleware (app.api.keys), authorization
guards declared on each controller, logic in app.api.services, and every error an
RFC 9457 problem document. `create_app()` is the uvicorn factory
(`wattline api` or `uvicorn --factory app.api:create_app`).
"""

from __future__ import annotations

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.base import DefineMiddleware
from litestar.config.cors import CORSConfig
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsPlugin

from app.api.database import Database, provide_database
from app.api.health import HealthController
from app.api.ingest import IngestController
from app.api.auth import AuthController, login_rate_limit
from app.api.config import CONTROLLERS as CONFIG_CONTROLLERS
from app.api.live import LiveController, ReadinessController
from app.api.security import AuthCache, AuthMiddleware, provide_principal
from app.api.store import PostgresStore
from app.api.problems import EXCEPTION_MAP
from app.api.reports import ReportController

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 10 * 1024 * 1024


# Push ingest: at most this many requests per client address (a burst of batches is fine).
INGEST_RATE_LIMIT = RateLimitConfig(rate_limit=("minute", 600), store="rate_limit_ingest")
OPENAPI = OpenAPIConfig(
    title="Wattline API", version="1.0.0", path="/api/docs",
    description="Energy management: configuration, live data, reports. See docs/api.md.",
    render_plugins=[ScalarRenderPlugin(path="/"), SwaggerRenderPlugin(path="/swagger"),
                    JsonRenderPlugin(path="/openapi.json")],
    components=Components(security_schemes={
        "bearer": SecurityScheme(type="http", scheme="bearer",
                                 description="An access token from /api/v1/auth/login, or an API key"),
        "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
    }),
    security=[{"bearer": []}, {"apiKey": []}],
)


def _cors() -> CORSConfig | None:
    """CORS for browser front ends, from WATTLINE_CORS_ORIGINS (comma-separated; unset: off)."""
    from app.settings import get_settings

    origins = [o.strip() for o in get_settings().cors_origins.split(",") if o.strip()]
    if not origins:
        return None
    return CORSConfig(allow_origins=origins, allow_credentials="*" not in origins,
                      allow_headers=["Authorization", "X-API-Key", "Content-Type"], max_age=600)


def create_app(database_url: str | None = None, *, max_body_bytes: int = MAX_BODY_BYTES) -> Litestar:
    """The application; the database is the configured one unless `database_url` says."""
    database = Database(database_url)
    return Litestar(
        route_handlers=[HealthController,
                        Router("/", route_handlers=[IngestController], middleware=[INGEST_RATE_LIMIT.middleware]),
                        AuthController, LiveController, ReadinessController, ReportController,
                        *CONFIG_CONTROLLERS],
        dependencies={"database": Provide(provide_database, sync_to_thread=False),
                      "principal": Provide(provide_principal, sync_to_thread=False)},
        middleware=[DefineMiddleware(AuthMiddleware, exclude=["^/api/docs"])],
        cors_config=_cors(),
        plugins=[ProblemDetailsPlugin(ProblemDetailsConfig(
            enable_for_all_http_exceptions=True, exception_to_problem_detail_map=EXCEPTION_MAP,
        ))],
        on_startup=[database.open, database.size_threads],
        on_shutdown=[database.close],
        state=State({"database": database, "auth_cache": AuthCache()}),
        # Rate-limit counters shared by every API process (app.api.store).
        stores={config.store: PostgresStore(database, config.store)
                for config in (login_rate_limit, INGEST_RATE_LIMIT)},
        request_max_body_size=max_body_bytes,
        openapi_config=OPENAPI,
    )
