"""The settings of the running app: built once by `create_app`, handed to each route."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bulkflow.settings import Settings


def app_settings(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


AppSettings = Annotated[Settings, Depends(app_settings)]
