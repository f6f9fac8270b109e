"""What the running app holds, built once by `create_app` and handed to each route: its
settings and the creator of its jobs' runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.jobs import RunCreator
from bulkflow.settings import Settings


def app_settings(request: Request) -> Settings:
    settings = request.app.state.settings
    assert isinstance(settings, Settings)
    return settings


AppSettings = Annotated[Settings, Depends(app_settings)]


def app_runs(request: Request) -> RunCreator:
    runs = request.app.state.runs
    assert isinstance(runs, RunCreator)
    return runs


AppRuns = Annotated[RunCreator, Depends(app_runs)]
