"""The load's database checks must probe indexes whatever the statistics say.

A stage table is one chunk; the targets can hold millions of rows yet look empty to the
planner (just truncated, or filled by this very import). A plan that scans the target per
staged row is quadratic, so the session settings must leave only the index-probing plan.
"""

from __future__ import annotations

import pytest

from bulkflow.db import _embedded_data_dir, _embedded_server
from bulkflow.settings import get_settings
from schemas import RESOURCES
from tasks.load import SESSION_SETTINGS, STAGE, id_resolution, violation_queries
from tasks.validate import LINE

pytestmark = pytest.mark.usefixtures("db")


@pytest.mark.parametrize("name", list(RESOURCES))
def test_checks_probe_target_indexes_even_when_targets_look_empty(name: str) -> None:
    resource = RESOURCES[name]
    columns = ", ".join(f"{f} text" for f in resource.field_names)
    statements = [*violation_queries(resource), *id_resolution(resource)]
    script = "\n".join(
        [
            f"CREATE TEMP TABLE {STAGE} ({LINE} bigint, {columns});",
            f"INSERT INTO {STAGE} ({LINE}, id) SELECT g, 'x' || g FROM generate_series(1, 50000) g;",
            # Statistics taken while the targets were empty: the state at the start of a load.
            "ANALYZE users, articles, comments;",
            "BEGIN;",
            *(f"{setting};" for setting in SESSION_SETTINGS if "synchronous" not in setting),
            *(f"EXPLAIN {statement};" for statement in statements),
            "ROLLBACK;",
        ]
    )
    plans = _embedded_server(_embedded_data_dir(get_settings().home)).psql(script)
    assert plans.count("QUERY PLAN") == len(statements) > 0
    targets = {fk.references for fk in resource.foreign_keys} | ({name} if resource.natural_key else set())
    for target in targets:
        assert f"Seq Scan on {target}" not in plans, plans
    assert "Hash" not in plans and "Merge" not in plans, plans
