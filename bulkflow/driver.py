"""How every connection bulkflow opens talks to PostgreSQL: the driver's options, in one
place (the benchmark's floors connect with them too, so that a floor stays a floor)."""

from __future__ import annotations

DRIVER_OPTIONS: dict[str, str] = {"adbc.postgresql.type_resolver_mode": "builtin"}
"""`builtin`: PostgreSQL's own types are known from the driver's table, where by default it
reads `pg_type` and every column of `pg_attribute` as it connects (45 of a connection's 50 ms
on the 2-core bench host, more in a database of many tables). bulkflow's tables and queries
hold only PostgreSQL's own types; a user-defined type (an enum, a composite) would come back
as bytes, so none may be declared in `schemas/` unless this option goes back to the driver's
default (`tests/test_connection_pool.py` compares every declared column with it)."""
