"""What data is, read by every layer: one definition per resource (fields, rules, keys),
the chunk's frames (`frames.py`), the reports and manifests, the flow parameters."""

from __future__ import annotations

from schemas.articles import ARTICLES
from schemas.columns import CHANGE_COLUMN
from schemas.comments import COMMENTS
from schemas.resource import PG_TYPES, ForeignKey, Resource
from schemas.users import USERS

# Dependency order: a resource only references resources listed before it.
RESOURCES: dict[str, Resource] = {r.name: r for r in (USERS, ARTICLES, COMMENTS)}


def get_resource(name: str) -> Resource:
    """The resource called `name`; raises ParameterError naming the known ones."""
    from bulkflow.errors import ParameterError

    try:
        return RESOURCES[name]
    except KeyError:
        raise ParameterError(f"unknown resource {name!r}: choose one of {', '.join(RESOURCES)}") from None


def declared_tables() -> dict[str, dict[str, str]]:
    """Each resource's table as declared: `{table: {column: PostgreSQL type}}` (what
    `bulkflow.db.refuse_drift` holds the database to)."""
    return {r.name: {f.name: PG_TYPES[f.kind] for f in r.fields} | {CHANGE_COLUMN: "xid8"} for r in RESOURCES.values()}


def dependents_of(resource: Resource) -> list[tuple[Resource, ForeignKey]]:
    """The resources whose rows reference `resource`'s rows, with the referencing key."""
    return [(r, fk) for r in RESOURCES.values() for fk in r.foreign_keys if fk.references == resource.name]
