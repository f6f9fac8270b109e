"""Bearer-token access to /v1 when `API_TOKEN` is set (open otherwise, as on a laptop)."""

from __future__ import annotations

import secrets

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.deps import AppSettings
from api.errors import ApiError

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API_TOKEN>` when API_TOKEN is set")


def require_token(settings: AppSettings, credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
    token = settings.api_token
    if token is None:
        return
    if credentials is None or not secrets.compare_digest(credentials.credentials, token.get_secret_value()):
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <API_TOKEN>")
