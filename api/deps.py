"""What the running app holds, built once by `create_app` and handed to each route: its
settings and the creator of its jobs' runs."""

from __future__ import annotations

from typing import Annotated, get_args

from fastapi import Depends, Query, Request

from api.jobs import RunCreator
from bulkflow.settings import Settings
from schemas.reports import HistoryStatus
from tasks.history import HistoryQuery


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


def history_query(
    resource: str | None = None,
    since: Annotated[str | None, Query(description="started at or after (ISO 8601)")] = None,
    status: Annotated[str | None, Query(description=", ".join(get_args(HistoryStatus)))] = None,
    limit: int = 50,
) -> HistoryQuery:
    """The load history's filters, checked as `bulkflow history` checks them."""
    return HistoryQuery.checked(resource, since, status, limit)


AppHistoryQuery = Annotated[HistoryQuery, Depends(history_query)]
