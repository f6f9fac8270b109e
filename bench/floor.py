"""The floor under an import's fixed cost: what any flow run on bulkflow's stack pays before
it does any work of its own.

`python -m bench.floor DATABASE_URL` loads the libraries an import runs on (Prefect, polars,
pyarrow, the PostgreSQL driver, pandera) with the collector paused as the `bulkflow` command
does, runs one flow with one parameter (declared as bulkflow declares its flows, so that its
parameters are serialised the same way) and the same heartbeat setting, opens one connection and runs
`SELECT 1`, and ends the way the command ends. The benchmark times it beside a 10-row import
and `python -c "import prefect"`: the import's cost above this line is bulkflow's own.
"""

from __future__ import annotations

import gc
import os
import sys

gc.disable()

import adbc_driver_postgresql.dbapi as adbc  # noqa: E402
import pandera.polars  # noqa: E402, F401
import polars  # noqa: E402, F401
import pyarrow  # noqa: E402, F401

from bulkflow.driver import DRIVER_OPTIONS  # noqa: E402
from tasks.prefect_defaults import flow, own_heartbeat_only  # noqa: E402

gc.freeze()
gc.enable()


@flow(name="floor")
def floor(database_url: str) -> None:
    with adbc.connect(database_url, db_kwargs=DRIVER_OPTIONS) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        cur.fetchall()


if __name__ == "__main__":
    with own_heartbeat_only():
        floor(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)  # as `bulkflow` does: no interpreter teardown
