"""The floor under an export: the PostgreSQL driver reading a table's rows as the export
reads them (the same query, Arrow batches over binary COPY, in id order), nothing formatted
or written.

`python -m bench.export_floor DATABASE_URL RESOURCE` prints the rows and the seconds the
read took once connected: what a warm `bulkflow api` cannot go below. The command's own
time is the CLI export's floor: Python, the libraries an export runs on, one connection and
the read. An export that must reach a ratio to COPY above this floor's cannot, with this
driver on this machine.
"""

from __future__ import annotations

import os
import sys
import time

import adbc_driver_postgresql.dbapi as adbc
import polars  # noqa: F401  # an export formats with it: its import is part of the floor

from bulkflow.driver import DRIVER_OPTIONS
from decisions.exports import export_sql, plan_export
from schemas.resource import RuleContext


def read_rows(database_url: str, resource: str) -> tuple[int, float]:
    """`resource`'s full export read and dropped: (rows, seconds of the read)."""
    sql, values = export_sql(plan_export(resource, "csv", context=RuleContext(allowed_roles=())))
    assert not values, "a full export binds no filter values"
    with adbc.connect(database_url, db_kwargs=DRIVER_OPTIONS) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.execute(sql)
        rows = sum(batch.num_rows for batch in cur.fetch_record_batch())
        return rows, time.perf_counter() - started


if __name__ == "__main__":
    rows, seconds = read_rows(sys.argv[1], sys.argv[2])
    print(rows, f"{seconds:.4f}", flush=True)
    os._exit(0)  # as `bulkflow` does: no interpreter teardown
