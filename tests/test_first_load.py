"""A first load (an empty table, one writer): chunk checks skip the lookups only others'
rows could answer, and a writer outside bulkflow is still caught by the constraints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from bulkflow.settings import Settings
from decisions.checks import database_facts
from decisions.decide import decide
from decisions.keys import SeenKeys
from decisions.rules import check_records
from files.staging import stage_source
from schemas import get_resource
from schemas.columns import LINE, RESOLVED_ID
from schemas.parameters import ImportOptions
from schemas.resource import RuleContext
from tasks.jobs import ChunkLedger, Job, open_job
from tasks.load import apply_chunk
from tests.helpers import sql

pytestmark = pytest.mark.usefixtures("prefect_api", "db")
USERS = get_resource("users")


def _job(tmp_path: Path, settings: Settings) -> Job:
    path = tmp_path / "users.csv"
    path.write_text("id,email,role\nu1,a@example.com,admin\n")
    return open_job.fn(settings, USERS, stage_source(str(path), settings=settings), ImportOptions(chunk_size=2), None)


def test_a_job_is_a_first_load_only_on_an_empty_table_with_one_write_slot(
    tmp_path: Path, settings_env: Callable[..., None]
) -> None:
    assert _job(tmp_path, Settings()).first_load
    settings_env(BULKFLOW_MAX_IMPORTS_PER_RESOURCE="2")
    assert not _job(tmp_path, Settings()).first_load
    settings_env(BULKFLOW_MAX_IMPORTS_PER_RESOURCE="1")
    sql("INSERT INTO users (id, email, role) VALUES ('z', 'z@example.com', 'reader')")
    assert not _job(tmp_path, Settings()).first_load


def test_a_row_another_writer_adds_during_a_first_load_is_refused_by_the_constraints(tmp_path: Path) -> None:
    settings = Settings()
    job = _job(tmp_path, settings)
    assert job.first_load
    raw = pl.DataFrame(
        {LINE: [2, 3], "id": ["u1", "u2"], "email": ["a@example.com", "b@example.com"], "role": ["admin", "author"]}
    )
    check = check_records(USERS, RuleContext.of(settings), 0, raw)
    facts = database_facts(settings, job.scope, USERS, check, committed=False)
    assert facts.keys.is_empty() and not facts.ids_exist  # nothing was asked
    sql("INSERT INTO users (id, email, role) VALUES ('z', 'a@example.com', 'reader')")  # meanwhile, outside bulkflow
    result = apply_chunk(settings, ChunkLedger(job.key, None), USERS, decide(USERS, check, facts, SeenKeys()))
    assert (result.inserted, result.updated, result.rejected) == (1, 0, 1)
    assert sql("SELECT line, rule FROM import_rejects") == [(2, "email_taken")]
    assert sql("SELECT id, email FROM users ORDER BY id") == [("u2", "b@example.com"), ("z", "a@example.com")]


def test_a_first_load_still_asks_for_keys_it_cannot_fold_or_ids_it_must_resolve(tmp_path: Path) -> None:
    settings = Settings()
    job = _job(tmp_path, settings)
    sql("INSERT INTO users (id, email, role) VALUES ('z', 'straße@example.com', 'reader')")  # outside bulkflow
    raw = pl.DataFrame(
        {
            LINE: [2, 3],
            "id": ["u1", None],
            "email": ["STRASSE@example.com", "Straße@example.com"],
            "role": ["admin", "author"],
        }
    )
    check = check_records(USERS, RuleContext.of(settings), 0, raw)
    facts = database_facts(settings, job.scope, USERS, check, committed=False)
    assert facts.keys.filter(pl.col(LINE) == 3).get_column(RESOLVED_ID).to_list() == ["z"]
