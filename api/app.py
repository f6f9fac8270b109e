"""The FastAPI application: /v1 routes behind the token check, Swagger UI at /ui, /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from api import exports, imports
from api.auth import require_token
from api.errors import install_error_handlers
from api.jobs import RunCreator
from api.metrics import BulkflowCollector
from api.models import ErrorBody
from bulkflow.errors import ParameterError
from bulkflow.settings import Settings

UI_ASSETS = "/ui-assets"
_ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 404, 409, 413, 415, 422, 503)}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, configured by `settings` (default: read from the environment now, once)."""
    app = FastAPI(
        title="bulkflow",
        version="1",
        description="Bulk import and export of users, articles and comments. Jobs are Prefect flow runs.",
        docs_url=None,  # served below from local files: no CDN, works air-gapped
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=_closing_runs,
    )
    app.state.runs = RunCreator()
    app.state.settings = settings = settings or Settings()
    if settings.api_token is not None and not settings.api_token.get_secret_value().strip():
        raise ParameterError(
            "API_TOKEN is set but empty, which no request could match: set a token, or remove the line to leave /v1 open"
        )
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_token)], responses=_ERRORS)  # type: ignore[arg-type]  # FastAPI's responses mapping is typed narrower than it accepts
    v1.include_router(imports.router)
    v1.include_router(exports.router)
    app.include_router(v1)
    install_error_handlers(app)
    _serve_swagger_ui(app)
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


@asynccontextmanager
async def _closing_runs(app: FastAPI) -> AsyncIterator[None]:
    yield
    app.state.runs.close()


def _serve_swagger_ui(app: FastAPI) -> None:
    """Swagger UI at /ui with its JavaScript and CSS served by this app (from the
    fastapi-offline package), so the page renders on a machine without internet."""
    app.mount(UI_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="ui-assets")

    @app.get("/ui", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="bulkflow API",
            swagger_js_url=f"{UI_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{UI_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{UI_ASSETS}/favicon.png",
        )
