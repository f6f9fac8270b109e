"""The schema's history: ordered migrations, each applied once per database.

Two kinds, applied in this order:

- **Numbered migrations** (`NUMBERED`), written by hand: the baseline (the tables as the
  first release created them) and every change since. A change that is not "add a
  nullable column" (a new index, a type change, a rename) is a new numbered migration.
- **Column migrations**, derived from the resources: when a resource gains a field, its
  fingerprint (the list of fields and types) changes, so a new migration
  `columns:<resource>:<fingerprint>` is pending, which adds every missing column as a
  nullable one. Adding a field to `schemas/<resource>.py` is all it takes.

`bulkflow.db.migrate` applies what is pending under an advisory lock, in one transaction,
and records each id in `schema_migrations`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from schemas import RESOURCES
from schemas.bookkeeping import BOOKKEEPING_DDL
from schemas.resource import PG_TYPES, Resource


@dataclass(frozen=True)
class Migration:
    id: str
    """Recorded in `schema_migrations`; never changes once released."""
    description: str
    statements: tuple[str, ...]


def _baseline() -> tuple[str, ...]:
    statements: list[str] = []
    for resource in RESOURCES.values():  # dependency order: referenced tables first
        statements.extend(resource.ddl())
    return (*statements, *BOOKKEEPING_DDL)


NUMBERED: tuple[Migration, ...] = (
    Migration(
        "0001", "baseline: resource and bookkeeping tables (idempotent on a database of the first release)", _baseline()
    ),
    Migration(
        "0002",
        "import_rejects indexed by chunk, for resuming runs that read a committed chunk's rejects",
        ("CREATE INDEX IF NOT EXISTS import_rejects_chunk_idx ON import_rejects (job_key, chunk_index)",),
    ),
    Migration(
        "0003",
        "import_jobs.source_name: the file's name as its sender knows it (API uploads keep theirs)",
        ("ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS source_name text",),
    ),
    Migration(
        "0004",
        "import_chunks.flow_run_id: the run that committed the chunk, so a run reports its own counts apart from the job's",
        ("ALTER TABLE import_chunks ADD COLUMN IF NOT EXISTS flow_run_id text",),
    ),
    Migration(
        "0005",
        "export_jobs.row_limit: the most rows an export job was asked for (its manifest says so)",
        ("ALTER TABLE export_jobs ADD COLUMN IF NOT EXISTS row_limit bigint",),
    ),
)

SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "id text PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
)


def fingerprint(resource: Resource) -> str:
    """Twelve hex digits naming the resource's fields and types."""
    spec = ",".join(f"{f.name}:{PG_TYPES[f.kind]}" for f in resource.fields)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def column_migration(resource: Resource) -> Migration:
    """Add the resource's columns the table lacks (nullable; existing rows get null)."""
    statements = tuple(
        f'ALTER TABLE "{resource.name}" ADD COLUMN IF NOT EXISTS "{f.name}" {PG_TYPES[f.kind]}'
        for f in resource.fields
        if f.name != "id"
    )
    return Migration(f"columns:{resource.name}:{fingerprint(resource)}", f"columns of {resource.name}", statements)


def all_migrations(resources: dict[str, Resource] | None = None) -> list[Migration]:
    """Every migration, in the order they apply."""
    chosen = RESOURCES if resources is None else resources
    return [*NUMBERED, *(column_migration(r) for r in chosen.values())]


def pending(applied: set[str], resources: dict[str, Resource] | None = None) -> list[Migration]:
    return [m for m in all_migrations(resources) if m.id not in applied]
