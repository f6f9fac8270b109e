"""The FastAPI application: /v1 routes behind the token check, Swagger UI at /ui, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api import exports, imports
from api.auth import require_token
from api.errors import install_error_handlers
from api.metrics import BulkflowCollector
from api.models import ErrorBody
from bulkflow.settings import Settings

_ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 409, 413, 415, 422, 503)}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, configured by `settings` (default: read from the environment now, once)."""
    app = FastAPI(
        title="bulkflow",
        version="1",
        description="Bulk import and export of users, articles and comments. Jobs are Prefect flow runs.",
        docs_url="/ui",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings or Settings()
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=_ERRORS)  # type: ignore[arg-type]  # FastAPI's responses mapping is typed narrower than it accepts
    v1.include_router(imports.router)
    v1.include_router(exports.router)
    app.include_router(v1)
    install_error_handlers(app)
    registry = CollectorRegistry()
    registry.register(BulkflowCollector(app.state.settings))

    @app.get("/metrics", response_class=PlainTextResponse, tags=["operations"])
    def metrics() -> PlainTextResponse:
        """Prometheus text: jobs by kind and status, rows imported/rejected/exported, durations."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health", tags=["operations"])
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
