"""Prefect settings bulkflow sets otherwise than Prefect's defaults, for the processes it
runs itself, unless the operator set them (in the environment or the Prefect profile).

- PREFECT_FLOWS_HEARTBEAT_FREQUENCY, off for the flow runs bulkflow runs in a process of its
  own (the CLI's, the landing pick-up's small files). Prefect sends the heartbeat from a
  thread that sleeps in whole seconds, and a run's end waits for it to wake: every run took
  up to a second longer than its work. bulkflow's runs say they are alive with an event of
  their own (`bulkflow.flow-run.alive`, `tasks/events.py`), which the shipped silent-runs
  automation watches.
- PREFECT_RUNNER_POLL_FREQUENCY, 1 s instead of 10 for `bulkflow serve`'s runner: a pick-up
  the landing watcher creates starts within a second (a look costs the server one query).

And one thing Prefect does otherwise: bulkflow's flows (declared with `flow` below) store
their parameters in pydantic's JSON form. Prefect's own flows pass each parameter through
FastAPI's `jsonable_encoder`, and importing it loads FastAPI's application, routing and
OpenAPI models: 70 ms of every command that runs a flow, for parameters that are pydantic
models and JSON values already.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ParamSpec, TypeVar

from prefect import Flow
from prefect.context import SettingsContext, get_settings_context
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_RUNNER_POLL_FREQUENCY, get_current_settings
from prefect.settings.legacy import Setting
from prefect.states import State
from pydantic_core import to_jsonable_python

SERVE_POLL_S = 1
P = ParamSpec("P")
R = TypeVar("R")


def chosen(setting: Setting) -> bool:
    """Whether the operator set `setting` rather than leaving Prefect's default."""
    section, field = _where(setting)
    return field in getattr(get_current_settings(), section).model_fields_set


@contextmanager
def unless_chosen(setting: Setting, value: Any) -> Iterator[None]:
    """`setting` is `value` in the block, unless the operator chose it. The current settings
    are copied with the one value changed: `temporary_settings` would build them again from
    every source, which took 60 ms."""
    if chosen(setting):
        yield
        return
    section, field = _where(setting)
    context = get_settings_context()
    current = context.settings
    changed = getattr(current, section).model_copy(update={field: value})
    with SettingsContext(profile=context.profile, settings=current.model_copy(update={section: changed})):
        yield


def _where(setting: Setting) -> tuple[str, str]:
    """(section, field) of a setting such as `flows.heartbeat_frequency`."""
    section, field = setting.accessor.split(".")
    return section, field


def own_heartbeat_only() -> AbstractContextManager[None]:
    """Flow runs started in the block send no Prefect heartbeat (see the module docstring)."""
    return unless_chosen(PREFECT_FLOWS_HEARTBEAT_FREQUENCY, None)


def prompt_runner() -> AbstractContextManager[None]:
    """A runner started in the block polls every SERVE_POLL_S (see the module docstring)."""
    return unless_chosen(PREFECT_RUNNER_POLL_FREQUENCY, SERVE_POLL_S)


def flow(**options: Any) -> Callable[[Callable[P, R]], Flow[P, R]]:
    """`prefect.flow(**options)` for bulkflow's flows: the same flow, whose parameters are
    stored in pydantic's JSON form (see the module docstring)."""

    def declare(fn: Callable[P, R]) -> Flow[P, R]:
        return _JsonParametersFlow(fn=fn, **options)

    return declare


class _JsonParametersFlow(Flow[P, R]):
    def serialize_parameters(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Each parameter as pydantic dumps it to JSON (by alias, as Prefect's encoder does);
        what cannot be dumped, or is a future or a state, stored as `<TypeName>` as Prefect does."""
        return {name: _jsonable(value) for name, value in parameters.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (PrefectFuture, State)):
        return f"<{type(value).__name__}>"
    try:
        return to_jsonable_python(value, by_alias=True)
    except Exception:  # noqa: BLE001 - an unserialisable parameter is stored by its type's name, as Prefect does
        return f"<{type(value).__name__}>"
