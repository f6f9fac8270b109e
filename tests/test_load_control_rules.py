"""Load control without a database: the budget's judgement, the write modes' verdicts, the
SQL they run, and the rejected records written back as a source."""

from __future__ import annotations

import io
import json

import polars as pl

from bulkflow.db import session_settings
from decisions import sql
from decisions.budget import RejectBudget
from decisions.decide import check_chunk, no_facts
from decisions.keys import SeenKeys
from files.replay import write_records
from schemas import RESOURCES, dependents_of
from schemas.columns import LINE
from schemas.parameters import ImportOptions
from schemas.resource import RuleContext

USERS = RESOURCES["users"]
CONTEXT = RuleContext(allowed_roles=("admin", "author", "editor", "reader"))


def test_the_budget_is_judged_on_the_rows_read_so_far() -> None:
    rate = RejectBudget(max_reject_rate=0.02, min_rows=1000)
    assert rate.spent(999, 500) is None  # too few rows read to judge a rate
    assert rate.spent(1000, 20) is None
    assert rate.spent(1000, 51) == "5.1% of the rows read so far were rejected, over the budget of 2%"
    count = RejectBudget(max_rejects=10)
    assert count.spent(50, 10) is None
    assert count.spent(50, 11) == "11 of the 50 rows read so far were rejected, over the budget of 10 rejects"
    assert not RejectBudget().is_set and RejectBudget(max_rejects=0).is_set


def test_what_makes_an_import_all_or_nothing() -> None:
    assert not ImportOptions().all_or_nothing
    assert ImportOptions(atomic=True).all_or_nothing and ImportOptions(mode="replace").all_or_nothing
    assert ImportOptions(max_rejects=3).all_or_nothing  # abort, the default, must leave nothing behind
    assert ImportOptions(max_rejects=3, on_budget="pause").all_or_nothing
    assert not ImportOptions(max_rejects=3, on_budget="continue").all_or_nothing


def _chunk(mode: str, in_table: list[int]) -> tuple[list[int], list[tuple[int, str, str]]]:
    raw = pl.DataFrame(
        {
            LINE: [2, 3, 4, 5],
            "id": ["u1", "u2", "u2", None],
            "email": ["a@x.io", "b@x.io", "c@x.io", "d@x.io"],
            "role": ["reader"] * 4,
        }
    )
    facts = no_facts()
    facts = type(facts)(facts.missing_references, facts.keys, in_table=pl.Series("line", in_table, pl.Int64))
    decided = check_chunk(USERS, CONTEXT, 0, raw, SeenKeys(), facts, mode)  # type: ignore[arg-type]
    rejects = decided.rejects.select("line", "field", "rule").rows()
    return decided.rows.get_column(LINE).to_list(), sorted(rejects)


def test_insert_refuses_rows_in_the_table_and_update_the_others() -> None:
    # u1 (line 2) is in the table; u2 is twice in the file; line 5 has no id
    assert _chunk("insert", [2]) == ([3, 5], [(2, "id", "already_exists"), (4, "id", "duplicate_id")])
    assert _chunk("update", [2]) == ([2], [(3, "id", "not_found"), (4, "id", "not_found"), (5, "email", "not_found")])
    assert _chunk("upsert", [2]) == ([2, 3, 5], [(4, "id", "duplicate_id")])


def test_the_sql_of_load_control_names_its_tables_quoted() -> None:
    staging = sql.staging_table("import:users:abc")
    assert staging.startswith("_bulkflow_job_") and staging == sql.staging_table("import:users:abc")
    assert sql.create_staging_sql(USERS, staging) == (
        f'CREATE TABLE IF NOT EXISTS "{staging}" ("_chunk" integer NOT NULL, "_line" bigint NOT NULL, '
        '"id" text, "email" text, "name" text, "role" text, "active" boolean, "created_at" timestamptz, '
        '"updated_at" timestamptz)'
    )
    assert sql.lock_for_apply_sql(USERS) == 'LOCK TABLE "users" IN SHARE ROW EXCLUSIVE MODE'
    predicted = sql.predict_sql(USERS, staging, by_chunk=True)
    assert predicted.startswith('SELECT s."_chunk", count(*) FILTER (WHERE NOT t."id" IS NOT NULL)')
    assert 's."created_at"::timestamptz' in predicted and predicted.endswith('GROUP BY s."_chunk" ORDER BY s."_chunk"')
    assert sql.in_table_query(USERS, "s1", absent=True).endswith(
        "WHERE NOT (i.found IS NOT NULL OR k.found IS NOT NULL)"
    )
    assert 'AND e."_line" < s."_line")' in str(sql.taken_query(USERS, "s1", whole_file=True))
    assert [(r.name, fk.field) for r, fk in dependents_of(USERS)] == [
        ("articles", "author_id"),
        ("comments", "user_id"),
    ]
    assert sql.delete_gone_sql(USERS, "g") == 'DELETE FROM "users" WHERE "id" IN (SELECT "id" FROM "g")'


def test_the_sql_of_an_apply_as_staged_reads_one_chunk_quoted() -> None:
    staging = sql.staging_table("import:users:abc")
    assert sql.staging_chunk_index_sql(staging) == (
        f'CREATE INDEX IF NOT EXISTS "{staging}_chunks" ON "{staging}" USING brin ("_chunk")'
    )
    drop, create = sql.staged_chunk_sql(USERS, staging, 3)
    assert drop == 'DROP TABLE IF EXISTS pg_temp."_bulkflow_stage"'
    assert create.startswith('CREATE TEMPORARY TABLE "_bulkflow_stage" ON COMMIT DROP AS SELECT "_line", "id", "email"')
    assert create.endswith(f'FROM "{staging}" WHERE "_chunk" = 3')
    assert sql.insert_sql(USERS, staging, chunk=3).endswith(f'"updated_at" FROM "{staging}" WHERE "_chunk" = 3')
    assert "SET LOCAL enable_hashjoin = on" in session_settings(whole_job=True)
    assert "SET LOCAL enable_hashjoin = off" in session_settings()


RAWS = [
    json.dumps({"id": "u1", "email": "bad", "name": 'Say "hi", then\nleave'}),
    "u2,too,many,fields,here",  # a record no reader could split: kept as its text
]


def test_rejected_records_are_written_back_in_their_format() -> None:
    fields = ["id", "email", "name"]
    csv = io.BytesIO()
    assert write_records([RAWS], "csv", fields, csv).records == 2
    read = pl.read_csv(io.BytesIO(csv.getvalue()), infer_schema=False)
    assert read.columns == fields and read.row(0) == ("u1", "bad", 'Say "hi", then\nleave')
    assert read.row(1) == ("u2,too,many,fields,here", None, None)
    parquet = io.BytesIO()
    write_records([RAWS[:1], []], "parquet", fields, parquet)
    assert pl.read_parquet(io.BytesIO(parquet.getvalue())).row(0) == ("u1", "bad", 'Say "hi", then\nleave')
    lines = ['{"id": "u1"}', '{"id": "u2"}\n']
    ndjson, array = io.BytesIO(), io.BytesIO()
    write_records([lines[:1], lines[1:]], "ndjson", fields, ndjson)
    assert ndjson.getvalue() == b'{"id": "u1"}\n{"id": "u2"}\n'
    write_records([lines[:1], lines[1:]], "json", fields, array)
    assert json.loads(array.getvalue()) == [{"id": "u1"}, {"id": "u2"}]
    cut = write_records([["x" * 20_000]], "ndjson", fields, io.BytesIO())
    assert (cut.records, cut.cut_short) == (0, 1)
