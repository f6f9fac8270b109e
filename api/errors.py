"""Every error leaves the API as JSON `{"error": {"code", "message", "details"}}`, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from bulkflow.errors import BulkflowError, ParameterError, RetryableError, TooLargeError, is_retryable

logger = logging.getLogger("bulkflow.api")


class ApiError(Exception):
    """An answer other than success, with its HTTP status and a stable error code."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors as `details`: where (location) and what (message)."""
    return [{"location": list(e["loc"]), "message": e["msg"]} for e in errors]


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": details}}, status_code=status)


def _classify(exc: BulkflowError) -> tuple[int, str]:
    if isinstance(exc, TooLargeError):
        return 413, "too_large"
    if isinstance(exc, ParameterError):
        return 400, "invalid_parameter"
    if isinstance(exc, RetryableError):
        return 503, "unavailable"
    return 422, "invalid_input"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(BulkflowError)
    async def _bulkflow_error(_: Request, exc: BulkflowError) -> JSONResponse:
        status, code = _classify(exc)
        return error_response(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", "the request does not match the API", validation_details(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_retryable(exc):
            return error_response(503, "unavailable", f"a dependency is unavailable, retry later: {exc}")
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "unexpected error; the server log has the details")
