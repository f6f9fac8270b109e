"""The chunk's frame contracts (`schemas/frames.py`): they hold at every boundary on every
kind of file, and they catch a broken frame before any SQL runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from bulkflow.errors import InvariantError
from bulkflow.settings import Settings
from decisions.checks import CheckScope, database_facts
from decisions.contracts import check
from decisions.decide import CheckedChunk, apply_decision, chunk_keys, decide_keys
from decisions.keys import SeenKeys
from decisions.rules import check_records
from files.read import read_chunks
from files.staging import stage_source
from schemas import get_resource
from schemas.columns import LINE, REJECT_COLUMNS
from schemas.frames import (
    Candidates,
    Decision,
    Flagged,
    KeyFacts,
    LoadRows,
    MissingReferences,
    Rejects,
    RowsRead,
    contract,
)
from schemas.resource import Resource, RuleContext
from tasks.jobs import ChunkLedger
from tasks.load import apply_chunk
from tests.helpers import DATA
from tests.hostile import CASES, Case

LOADED = [case for case in CASES if not case.refused]
SAMPLES = [
    ("users", DATA / "users.csv"),
    ("articles", DATA / "articles.ndjson"),
    ("comments", DATA / "comments.ndjson"),
]


def _checked_frames(resource: Resource, path: Path, settings: Settings, chunk_size: int) -> Iterator[int]:
    """Run the steps of an import over the file, the database asked as a load asks it,
    checking each frame against its contract; yields the rows read of each chunk."""
    staged = stage_source(str(path), settings=settings)
    seen, context = SeenKeys(), RuleContext.of(settings)
    try:
        for index, batch in enumerate(read_chunks(staged, resource, chunk_size, settings.max_record_bytes)):
            check(contract(RowsRead, resource), batch.rows)
            records = check_records(resource, context, index, batch.rows)
            check(contract(Flagged, resource), records.flagged)
            check(contract(Rejects, resource), records.rejects)
            facts = database_facts(settings, CheckScope("job"), resource, records, committed=False)
            check(contract(KeyFacts, resource), facts.keys)
            check(contract(MissingReferences, resource), facts.missing_references)
            keys = chunk_keys(resource, records, facts)
            check(contract(Candidates, resource), keys.candidates)
            decision = decide_keys(resource, keys, seen)
            check(contract(Decision, resource), decision.outcome)
            decided = apply_decision(resource, records, decision)
            check(contract(LoadRows, resource), decided.rows)
            check(contract(Rejects, resource), decided.rejects)
            yield batch.rows.height
    finally:
        staged.cleanup()


@pytest.mark.usefixtures("db")
@pytest.mark.parametrize(("name", "path"), SAMPLES, ids=[name for name, _ in SAMPLES])
def test_every_frame_of_the_sample_files_keeps_its_contract(name: str, path: Path) -> None:
    rows = sum(_checked_frames(get_resource(name), path, Settings(), chunk_size=7))
    assert rows > 0


@pytest.mark.usefixtures("db")
@pytest.mark.parametrize("case", LOADED, ids=[case.name for case in LOADED])
def test_every_frame_of_a_hostile_file_keeps_its_contract(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in case.settings.items():
        monkeypatch.setenv(variable, value)
    settings = Settings()
    path = case.write(tmp_path)
    rows = sum(_checked_frames(get_resource(case.resource), path, settings, case.chunk_size or settings.chunk_size))
    assert rows == case.rows_read


def _users(lines: list[int], **columns: list[object]) -> pl.DataFrame:
    """A users load frame on `lines`; the fields not given are null."""
    resource = get_resource("users")
    frame = pl.DataFrame({LINE: lines, **columns})
    return frame.select(
        pl.col(LINE).cast(pl.Int64),
        *[
            (pl.col(name) if name in frame.columns else pl.lit(None)).cast(dtype).alias(name)
            for name, dtype in resource.polars_schema().items()
        ],
    )


NO_REJECTS = pl.DataFrame(schema=REJECT_COLUMNS)
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"


@pytest.mark.parametrize(
    ("rows", "broken"),
    [
        (_users([2, 3], id=["u1", None], email=["a@x.io", "b@x.io"], role=["reader"] * 2), "id: not_nullable"),
        (_users([2, 3], id=["u1", "u1"], email=["a@x.io", "b@x.io"], role=["reader"] * 2), "id: field_uniqueness"),
        (_users([2, 2], id=["u1", "u2"], email=["a@x.io", "b@x.io"], role=["reader"] * 2), "_line: field_uniqueness"),
        (_users([2], id=["u1"], email=[None], role=["reader"]), "email: not_nullable"),
    ],
    ids=["null id", "repeated id", "repeated line", "required field null"],
)
def test_a_broken_load_frame_is_refused_before_any_sql_runs(
    rows: pl.DataFrame, broken: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database cannot be reached: an error other than the contract's would mean SQL was tried.
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)
    chunk = CheckedChunk(index=0, rows_read=rows.height, rows=rows, rejects=NO_REJECTS, source=rows.clear())
    with pytest.raises(InvariantError, match=broken) as refused:
        apply_chunk(Settings(), ChunkLedger("job", None), get_resource("users"), chunk)
    assert "LoadRows frame breaks its contract" in str(refused.value)


def test_rejects_without_a_rule_id_are_refused() -> None:
    rejects = pl.DataFrame(
        {"line": [2], "field": ["email"], "rule": ["Not A Rule"], "message": ["m"], "value": [None], "raw": [None]},
        schema=REJECT_COLUMNS,
    )
    with pytest.raises(InvariantError, match="rule: str_matches"):
        check(contract(Rejects, get_resource("users")), rejects)


def test_a_sound_load_frame_passes() -> None:
    rows = _users([2, 3], id=["u1", "u2"], email=["a@x.io", "b@x.io"], role=["reader"] * 2)
    check(contract(LoadRows, get_resource("users")), rows)
    with pytest.raises(InvariantError, match="_line: greater_than_or_equal_to"):
        check(contract(LoadRows, get_resource("users")), rows.with_columns(pl.lit(0, pl.Int64).alias(LINE)))
