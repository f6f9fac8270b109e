"""Which field each column of a file feeds: as named, as the map says, or by a loose
match (case, blanks, `-`/`_`, a byte order mark), every match other than by name reported.

Pure: a file's columns and a resource in, the match out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bulkflow.errors import InputError
from schemas.reports import HeaderMatch
from schemas.resource import Resource


@dataclass(frozen=True)
class ColumnMatch:
    """Which field each of a file's columns feeds."""

    matches: tuple[HeaderMatch, ...] = ()
    read: tuple[str, ...] = ()
    """The file's columns as they are read: their field, else their own name."""

    @property
    def renames(self) -> dict[str, str]:
        """column -> field, for the columns read under another name."""
        return {m.column: m.field for m in self.matches}

    def read_as(self, columns: list[str]) -> list[str]:
        """The names the columns are read under: their field, else their own name."""
        return [self.renames.get(c, c) for c in columns]

    def column_of(self, field_name: str) -> str:
        """The file's column a field is read from."""
        return next((c for c, f in self.renames.items() if f == field_name), field_name)


def loose_name(name: str) -> str:
    """A header as compared loosely: no byte order mark, any case, blanks, '-' and '_' dropped."""
    return re.sub(r"[\s_-]+", "", name.lstrip("\ufeff")).casefold()


def match_columns(resource: Resource, source: str, columns: list[str], given: Mapping[str, str]) -> ColumnMatch:
    """Each column's field: the map's, its own name, or the field it names loosely.
    InputError for a map naming a field the resource does not have, or two columns read
    as one field."""
    unknown = sorted({f for f in given.values() if f not in resource.field_names})
    if unknown:
        raise InputError(
            f"the map names {', '.join(unknown)}, which {resource.name} does not have "
            f"(its fields: {', '.join(resource.field_names)})"
        )
    loose = {loose_name(f): f for f in resource.field_names}
    matches: list[HeaderMatch] = []
    for column in columns:
        if column in given:
            if given[column] != column:
                matches.append(HeaderMatch(column=column, field=given[column], by="map"))
        elif column not in resource.field_names and loose_name(column) in loose:
            matches.append(HeaderMatch(column=column, field=loose[loose_name(column)], by="loose"))
    renames = {m.column: m.field for m in matches}
    read_as = [renames.get(c, c) for c in columns]
    repeated = sorted({f for f in read_as if f in resource.field_names and read_as.count(f) > 1})
    if repeated:
        sources = "; ".join(f"{f}: {', '.join(repr(c) for c, r in zip(columns, read_as) if r == f)}" for f in repeated)
        raise InputError(f"{source}: several columns are read as one field ({sources}): map only one of them")
    return ColumnMatch(tuple(matches), tuple(read_as))
