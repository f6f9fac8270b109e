"""The decision room: what happens to each row, and the SQL that asks and tells the database.

- `parsers`: field text to typed values (and back, for the CSV form of lists).
- `rules`: the record rules applied to a chunk; reject entries.
- `keys`: `SeenKeys`, the keys accepted earlier in the file (first accepted occurrence wins).
- `decide`: a chunk's outcome, row by row, given the record rules and the database's facts.
- `checks`: the database's facts about a chunk's candidates (read-only queries).
- `contracts`: the chunk frames checked against `schemas.frames`.
- `exports`: an export request planned from its filters.
- `sql`: every statement, built by pure functions with quoted identifiers.

Nothing here is a Prefect task: `tasks/` wraps these steps.
"""
