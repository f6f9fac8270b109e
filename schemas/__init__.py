"""What data is: one definition per resource, read by every layer."""

from __future__ import annotations

from schemas.articles import ARTICLES
from schemas.comments import COMMENTS
from schemas.resource import Resource
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
