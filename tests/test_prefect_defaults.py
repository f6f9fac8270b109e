"""The Prefect settings bulkflow sets for the processes it runs, unless the operator chose them."""

from __future__ import annotations

import pytest
from prefect.settings import get_current_settings

from tasks.prefect_defaults import SERVE_POLL_S, own_heartbeat_only, prompt_runner


def test_runs_started_by_bulkflow_send_no_prefect_heartbeat_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    before = get_current_settings().flows.heartbeat_frequency
    with own_heartbeat_only():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == before


def test_a_heartbeat_the_operator_chose_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45}), own_heartbeat_only():
        assert get_current_settings().flows.heartbeat_frequency == 45


def test_the_served_runner_polls_promptly_unless_told_otherwise() -> None:
    from prefect.settings import PREFECT_RUNNER_POLL_FREQUENCY, temporary_settings

    with prompt_runner():
        assert get_current_settings().runner.poll_frequency == SERVE_POLL_S
    with temporary_settings(updates={PREFECT_RUNNER_POLL_FREQUENCY: 30}), prompt_runner():
        assert get_current_settings().runner.poll_frequency == 30
