"""How often an import's progress is sent on: pure, nothing started."""

from __future__ import annotations

from tasks.report import PROGRESS_EVERY, Every


def test_progress_is_sent_at_most_once_a_period_but_always_first_and_last() -> None:
    updates = Every(PROGRESS_EVERY)
    clock = [0.0, 0.1, 0.2, PROGRESS_EVERY, PROGRESS_EVERY + 0.1, 2 * PROGRESS_EVERY + 0.05]
    assert [updates.due(now) for now in clock] == [True, False, False, True, False, True]
    assert updates.due(2 * PROGRESS_EVERY + 0.06, last=True)  # the 100% is never held back


def test_a_period_counts_from_the_last_time_sent_not_from_the_last_asked() -> None:
    updates = Every(1.0)
    assert updates.due(10.0)
    assert not any(updates.due(10.0 + step / 10) for step in range(1, 10))
    assert updates.due(11.0)
