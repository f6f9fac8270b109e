"""The SQL builders, as text: every identifier quoted, every value a parameter, and the
shapes the loader relies on (file order, the conflict target, LATERAL probes). EXPLAIN of
the same text runs in test_load_plans.py."""

from __future__ import annotations

import re
from dataclasses import replace

from decisions import sql
from schemas import RESOURCES
from schemas.resource import Field, ForeignKey

USERS, ARTICLES = RESOURCES["users"], RESOURCES["articles"]
ODD = replace(USERS, name='we"ird users', fields=(Field("id"), Field('e"mail'), Field("role")), natural_key=None)
"""A table and a column no unquoted identifier could name."""


def test_identifiers_are_quoted_with_inner_quotes_doubled() -> None:
    assert sql.ident("users") == '"users"'
    assert sql.ident('we"ird') == '"we""ird"'


def test_the_upsert_goes_in_file_order_onto_the_id_and_counts_every_outcome() -> None:
    text = sql.upsert_sql(ODD)
    assert text.startswith(
        'WITH up AS (INSERT INTO "we""ird users" AS t ("id", "e""mail", "role") '
        'SELECT "id", "e""mail", "role" FROM "_bulkflow_stage" ORDER BY "_line" '
    )
    # an updated row is stamped with its writer (what incremental exports read)
    assert (
        'ON CONFLICT ("id") DO UPDATE SET "e""mail" = EXCLUDED."e""mail", "role" = EXCLUDED."role", '
        '"bulkflow_xid" = pg_current_xact_id() '
    ) in text
    # a row equal to the stored one is not written: it counts as unchanged
    assert 'WHERE (t."e""mail", t."role") IS DISTINCT FROM (EXCLUDED."e""mail", EXCLUDED."role") ' in text
    assert text.endswith(
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted), "
        '(SELECT count(*) FROM "_bulkflow_stage") - count(*) FROM up'
    )


def test_insert_and_existence_check_name_the_stage_given() -> None:
    assert (
        sql.insert_sql(ODD, "s")
        == 'INSERT INTO "we""ird users" ("id", "e""mail", "role") SELECT "id", "e""mail", "role" FROM "s"'
    )
    assert sql.any_existing_sql(ODD, "s") == (
        'SELECT EXISTS (SELECT 1 FROM "s" s WHERE EXISTS (SELECT 1 FROM "we""ird users" t WHERE t."id" = s."id"))'
    )
    assert sql.delete_stage_line_sql("s") == 'DELETE FROM "s" WHERE "_line" = $1'


def test_checks_probe_the_target_once_per_staged_row() -> None:
    fk = ForeignKey('author"id', 'we"ird users', "unknown_author")
    text = sql.missing_reference_query(fk)
    assert text == (
        'SELECT s."_line" AS line FROM "_bulkflow_check" s LEFT JOIN LATERAL (SELECT 1 AS found FROM "we""ird users" r '
        'WHERE r."id" = s."author""id" LIMIT 1) r ON true WHERE s."author""id" IS NOT NULL AND r.found IS NULL'
    )
    assert sql.key_facts_query(ODD) is None and sql.taken_query(ODD, "s") is None
    for query in (sql.key_facts_query(USERS), sql.taken_query(USERS, "s"), sql.any_id_exists_query(USERS)):
        assert query is not None
        text = query
        assert text is not None and "LATERAL" in text and "LIMIT 1" in text
        assert '"users" t' in text


def test_an_id_less_row_derives_its_id_from_a_quoted_literal_of_the_resource() -> None:
    text = sql.key_facts_query(replace(USERS, name="o'users"))
    assert text is not None and "md5('o''users:' || lower(s.\"email\"))::uuid::text" in text


def test_export_select_binds_values_as_settings_and_quotes_every_name() -> None:
    text = sql.export_select(
        ODD.name,
        ["id", 'e"mail'],
        [("role", "=", "bulkflow.filter_1", "text"), ("created_at", ">=", "bulkflow.filter_2", "timestamptz")],
    )
    assert text == (
        'SELECT "id", "e""mail" FROM "we""ird users" WHERE "role" = current_setting(\'bulkflow.filter_1\')::text '
        'AND "created_at" >= current_setting(\'bulkflow.filter_2\')::timestamptz ORDER BY "id"'
    )
    assert sql.export_select("users", ["id"], []) == 'SELECT "id" FROM "users" ORDER BY "id"'
    limited = sql.export_select("users", ["id"], [], "bulkflow.limit")
    assert limited == 'SELECT "id" FROM "users" ORDER BY "id" LIMIT current_setting(\'bulkflow.limit\')::bigint'


def test_the_parallel_export_statements_quote_names_and_the_snapshot() -> None:
    assert sql.row_estimate_sql(ODD.name) == (
        'SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = \'"we""ird users"\'::regclass'
    )
    assert sql.id_sample_sql(ODD.name, 1.5) == (
        'SELECT "id" FROM "we""ird users" TABLESAMPLE SYSTEM (1.500000) ORDER BY "id"'
    )
    assert sql.joined_snapshot_sql("00000003-0000001B-1") == "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'"
    assert sql.joined_snapshot_sql("x' OR '1") == "SET TRANSACTION SNAPSHOT 'x'' OR ''1'"


def test_no_builder_puts_a_value_in_the_text() -> None:
    texts = [
        sql.upsert_sql(ARTICLES),
        sql.insert_sql(ARTICLES),
        sql.any_existing_sql(ARTICLES),
        *(sql.missing_reference_query(fk) for fk in ARTICLES.foreign_keys),
        sql.recorded_rejects_query(),
    ]
    for text in texts:
        literals = re.findall(r"'[^']*'", text)
        assert literals == [], (text, literals)
