"""Every error leaves the API as JSON `{"error": {"code", "message", "details"}}`, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.models import ALIASES
from bulkflow.errors import BulkflowError, ParameterError, RetryableError, TooLargeError, is_retryable

logger = logging.getLogger("bulkflow.api")
RESOURCE_NAMES = ("resource", *ALIASES["resource"])


class ApiError(Exception):
    """An answer other than success, with its HTTP status and a stable error code."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors as `details`: where (location) and what (message)."""
    return [{"location": list(e["loc"]), "message": e["msg"]} for e in errors]


def invalid_request(errors: Sequence[Any], given: Mapping[str, Any]) -> JSONResponse:
    """A request that does not match the API. A value outside what a parameter allows (an
    unknown resource, format or filter) is a 400 naming what is allowed, as the CLI says it,
    wherever it was sent (query, JSON body, form); a request of the wrong shape (a required
    field missing, a wrong type) is a 422 with pydantic's details."""
    refused = _refused_parameter(errors, given)
    if refused is not None:
        return error_response(400, "invalid_parameter", str(refused))
    return error_response(422, "invalid_request", "the request does not match the API", validation_details(errors))


def _refused_parameter(errors: Sequence[Any], given: Mapping[str, Any]) -> ParameterError | None:
    """The domain's own refusal of the first value outside what its parameter allows."""
    from decisions.exports import unknown_filter
    from schemas import get_resource
    from schemas.parameters import check_format

    checks: dict[str, Callable[[str], object]] = {"format": check_format}
    checks |= {name: get_resource for name in RESOURCE_NAMES}
    for error in errors:
        check = checks.get(str(error["loc"][-1])) if error["loc"] else None  # a model-wide error has no field
        if error["type"] == "literal_error" and check is not None:
            try:
                check(str(error.get("input")))
            except ParameterError as refused:
                return refused
    resource = next((given[name] for name in RESOURCE_NAMES if name in given), None)
    for error in errors:
        if error["type"] == "extra_forbidden" and error["loc"] and isinstance(resource, str):
            try:
                return unknown_filter(get_resource(resource), str(error["loc"][-1]))
            except ParameterError as refused:
                return refused
    return None


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
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        given = {**request.query_params, **(exc.body if isinstance(exc.body, dict) else {})}
        return invalid_request(exc.errors(), given)

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
