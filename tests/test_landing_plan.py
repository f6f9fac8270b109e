"""How the landing pick-up plans its import runs and how it and the API read their ends:
pure, nothing started."""

from __future__ import annotations

from uuid import uuid4


def test_outcomes_of_import_runs() -> None:
    from prefect.client.schemas.objects import FlowRun, State
    from prefect.states import Completed, Crashed, Failed

    from tasks.landing import outcome_of
    from tasks.run_labels import RETRYABLE_FAILURE

    def run(state: State, tags: tuple[str, ...] = ()) -> FlowRun:
        return FlowRun(flow_id=uuid4(), state=state, tags=list(tags))

    prefix = "Flow run encountered an exception: "
    assert outcome_of(run(Completed())) == ("imported", None)
    assert outcome_of(run(Failed(message=prefix + "InputError: u.csv line 2 is not valid UTF-8"))) == (
        "failed",
        "u.csv line 2 is not valid UTF-8",
    )
    lost: State = Failed(message=prefix + "DatabaseUnavailable: cannot connect")
    assert outcome_of(run(lost, (RETRYABLE_FAILURE,))) == (None, "cannot connect")
    assert outcome_of(run(lost)) == ("failed", "cannot connect")  # the run's tag decides, never its message
    assert outcome_of(run(Crashed(message="worker lost")))[0] is None


def test_batches_keep_dependency_order_and_the_per_table_limit() -> None:
    from tasks.landing import LandedFile, import_batches

    files = [
        LandedFile(f"{r}/{n}", r, 1, "t")
        for r, n in [("users", "a"), ("users", "b"), ("users", "c"), ("articles", "d")]
    ]
    assert [[f.location for f in b] for b in import_batches(files, 1)] == [
        ["users/a"],
        ["users/b"],
        ["users/c"],
        ["articles/d"],
    ]
    assert [[f.location for f in b] for b in import_batches(files, 2)] == [
        ["users/a", "users/b"],
        ["users/c"],
        ["articles/d"],
    ]


def test_imports_of_one_table_take_turns_batch_after_batch() -> None:
    """A pick-up's imports run at once in threads; each does its table work once every
    import of the batch before ended its own, whatever order the threads start in."""
    import threading
    import time

    from tasks.limits import TableTurn, imports_take, table_work, turns_of

    turns = turns_of([1, 1, 2, 1])
    assert [len(turn.after) for turn in turns] == [0, 1, 1, 1, 2]
    assert turns[2].after == turns[3].after == (turns[1].done,)
    assert turns[4].after == (turns[2].done, turns[3].done)

    entered: list[int] = []
    working: set[int] = set()
    overlapping: list[set[int]] = []

    def work(index: int, turn: TableTurn) -> None:
        with imports_take(turn), table_work():
            entered.append(index)
            working.add(index)
            overlapping.append(set(working))
            time.sleep(0.01)
            working.discard(index)

    threads = [threading.Thread(target=work, args=(i, turn)) for i, turn in enumerate(turns)]
    for thread in reversed(threads):  # the last turns are the first to ask
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert entered[:2] == [0, 1] and set(entered[2:4]) == {2, 3} and entered[4] == 4
    assert max(len(at_once) for at_once in overlapping) <= 2  # only a batch of two at once
    assert not any({4} < at_once or {1} < at_once for at_once in overlapping)

    failed_early = TableTurn()
    with imports_take(failed_early):
        pass  # an import that ended before its table work still ends its turn
    assert failed_early.done.is_set()
    with table_work():  # no turn given: at once
        pass


def test_the_api_says_whether_a_failed_job_may_succeed_on_another_try() -> None:
    from prefect.client.schemas.objects import FlowRun, State
    from prefect.states import Completed, Failed

    from api.jobs import _as_job
    from tasks.run_labels import RETRYABLE_FAILURE

    lost: State = Failed(message="Flow run encountered an exception: DatabaseUnavailable: cannot connect")
    assert _as_job(FlowRun(flow_id=uuid4(), state=lost, tags=[RETRYABLE_FAILURE])).retryable is True
    assert _as_job(FlowRun(flow_id=uuid4(), state=lost, tags=["bulkflow"])).retryable is False
    assert _as_job(FlowRun(flow_id=uuid4(), state=Completed())).retryable is None
