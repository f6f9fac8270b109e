"""The chunk checks must probe indexes whatever the statistics say.

A stage table is one chunk; the targets can hold millions of rows yet look empty to the
planner (just truncated, or filled by this very import), or hold stale statistics taken
while an uncommitted chunk was in flight. A plan that scans the target per staged row, or
the stage per target row, is quadratic; the statements' shape must leave only the plan
that walks the stage and probes the target's index once per staged row.
"""

from __future__ import annotations

import pytest

from bulkflow.db import LOADING_SESSION
from bulkflow.embedded import embedded_data_dir, embedded_server
from bulkflow.settings import Settings
from decisions.decide import KEY, LINE
from decisions.sql import CHECK_STAGE, STAGE, key_facts_query, missing_reference_query, taken_query
from schemas import RESOURCES

pytestmark = pytest.mark.usefixtures("db")


def _statements(name: str) -> list[str]:
    resource = RESOURCES[name]
    statements = [missing_reference_query(fk) for fk in resource.foreign_keys]
    statements += [missing_reference_query(fk, STAGE) for fk in resource.foreign_keys]
    statements += [q for q in (key_facts_query(resource), taken_query(resource, STAGE)) if q]
    return statements


def _explain(name: str, statistics: list[str]) -> str:
    resource = RESOURCES[name]
    columns = ", ".join(f'"{f}" text' for f in resource.field_names)
    statements = _statements(name)
    script = "\n".join(
        [
            *statistics,
            "BEGIN;",
            *(f"{setting};" for setting in LOADING_SESSION if "synchronous" not in setting),
            f'CREATE TEMP TABLE "{CHECK_STAGE}" ("{LINE}" bigint, "{KEY}" text, {columns});',
            f'CREATE TEMP TABLE "{STAGE}" ("{LINE}" bigint, {columns});',
            *(
                f'INSERT INTO "{t}" ("{LINE}", id) SELECT g, \'x\' || g FROM generate_series(1, 50000) g;'
                for t in (CHECK_STAGE, STAGE)
            ),
            *(f"EXPLAIN {statement};" for statement in statements),
            "ROLLBACK;",
        ]
    )
    plans = embedded_server(embedded_data_dir(Settings().home)).psql(script)
    assert plans.count("QUERY PLAN") == len(statements) > 0, plans
    return plans


def _assert_probes(name: str, plans: str) -> None:
    resource = RESOURCES[name]
    targets = {fk.references for fk in resource.foreign_keys} | ({name} if resource.natural_key else set())
    for target in targets:
        assert f"Seq Scan on {target}" not in plans, plans
        assert f"Index Only Scan using {target}_pkey" in plans or f"Index Scan using {target}_" in plans, plans
    assert "Hash" not in plans and "Merge" not in plans and "JIT" not in plans, plans
    # Each statement walks the stage once, on the outer side of its nested loop.
    for plan in plans.split("QUERY PLAN")[1:]:
        assert "Nested Loop" in plan and "Seq Scan on _bulkflow_" in plan, plan


@pytest.mark.parametrize("name", list(RESOURCES))
def test_checks_probe_target_indexes_even_when_targets_look_empty(name: str) -> None:
    """Statistics taken while the targets were empty: the state at the start of a load."""
    _assert_probes(name, _explain(name, ["ANALYZE users, articles, comments;"]))


@pytest.mark.parametrize("name", ["users", "articles"])
def test_checks_keep_their_plan_with_statistics_of_an_uncommitted_chunk(name: str) -> None:
    """The seen repro: autoanalyze sampled a table while a chunk was uncommitted, so the
    statistics claim rows the table does not have (here: 20k rows inserted, analysed, and
    rolled back), and the natural key's index looks like a one-row table."""
    target = RESOURCES[name]
    rows = {
        "users": "INSERT INTO users (id, email, role) SELECT 'g' || g, 'g' || g || '@x.io', 'reader' FROM generate_series(1, 20000) g;",
        "articles": "INSERT INTO users (id, email, role) VALUES ('u', 'u@x.io', 'reader'); "
        "INSERT INTO articles (id, slug, title, author_id, status) "
        "SELECT 'a' || g, 's-' || g, 't', 'u', 'draft' FROM generate_series(1, 20000) g;",
    }[name]
    stale = ["BEGIN;", rows, f"ANALYZE {target.name};", "ROLLBACK;"]
    _assert_probes(name, _explain(name, stale))


def test_a_replace_finds_the_rows_to_delete_by_the_statistics_of_the_whole_job() -> None:
    """A whole job's staged rows are analysed before the apply, which then plans by them: the
    anti-join of the table against 1M staged rows as nested loops over the unindexed staging
    table (the chunk plans) never ended in the benchmark; here it is one hash anti-join."""
    from bulkflow.db import CHUNK_PLANS
    from decisions.sql import analyze_sql, collect_gone_sql, create_staging_sql, gone_table_sql, staging_table
    from schemas.columns import STAGED_CHUNK

    users = RESOURCES["users"]
    staging, gone = staging_table("plan-test"), "_bulkflow_gone_users"
    script = "\n".join(
        [
            "BEGIN;",
            *(
                f"{setting};"
                for setting in LOADING_SESSION
                if setting not in CHUNK_PLANS and "synchronous" not in setting
            ),
            "INSERT INTO users (id, email, role) SELECT 'g' || g, 'g' || g || '@x.io', 'reader' FROM generate_series(1, 20000) g;",
            f"{create_staging_sql(users, staging)};",
            f'INSERT INTO "{staging}" ("{STAGED_CHUNK}", "{LINE}", id, email, role) '
            "SELECT 0, g, 'g' || g, 'g' || g || '@x.io', 'reader' FROM generate_series(1, 20000) g;",
            f"{analyze_sql(staging)}; {analyze_sql('users')};",
            f"{gone_table_sql(gone)};",
            f"EXPLAIN {collect_gone_sql(users, staging, gone)};",
            "ROLLBACK;",
        ]
    )
    plan = embedded_server(embedded_data_dir(Settings().home)).psql(script)
    assert "Hash Anti Join" in plan or "Hash Right Anti Join" in plan, plan


def test_an_apply_as_staged_reads_a_chunk_by_its_index_and_plans_its_replace_by_the_whole_job() -> None:
    """The apply begun as the chunks are staged reads each chunk back through the staging
    table's block-range index under the chunk plans (a scan of every chunk staged so far,
    per chunk, would be quadratic); the replace at its end, in the same transaction, gets
    the whole job's plans back (one hash anti-join, as in the test above)."""
    from bulkflow.db import session_settings
    from decisions.sql import (
        analyze_sql,
        collect_gone_sql,
        create_staging_sql,
        gone_table_sql,
        insert_sql,
        staged_chunk_sql,
        staging_chunk_index_sql,
        staging_table,
    )
    from schemas.columns import STAGED_CHUNK

    users = RESOURCES["users"]
    staging, gone = staging_table("plan-test-as-staged"), "_bulkflow_gone_users"
    script = "\n".join(
        [
            "BEGIN;",
            *(f"{setting};" for setting in session_settings() if "synchronous" not in setting),
            f"{create_staging_sql(users, staging)};",
            f"{staging_chunk_index_sql(staging)};",
            f'INSERT INTO "{staging}" ("{STAGED_CHUNK}", "{LINE}", id, email, role) '
            "SELECT g / 5000, g, 'g' || g, 'g' || g || '@x.io', 'reader' FROM generate_series(0, 39999) g;",
            f"EXPLAIN {insert_sql(users, staging, chunk=3)};",
            f"EXPLAIN {staged_chunk_sql(users, staging, 3)[1]};",
            *(f"{setting};" for setting in session_settings(whole_job=True) if "synchronous" not in setting),
            f"{analyze_sql(staging)}; {analyze_sql('users')};",
            f"{gone_table_sql(gone)};",
            f"EXPLAIN {collect_gone_sql(users, staging, gone)};",
            "ROLLBACK;",
        ]
    )
    plans = embedded_server(embedded_data_dir(Settings().home)).psql(script).split("QUERY PLAN")[1:]
    assert len(plans) == 3, plans
    for chunk_read in plans[:2]:
        assert f"Bitmap Index Scan on {staging}_chunks" in chunk_read and "Seq Scan" not in chunk_read, chunk_read
    assert "Hash Anti Join" in plans[2] or "Hash Right Anti Join" in plans[2], plans[2]
