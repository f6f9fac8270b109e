"""The partner-shaped files of `tests/fixtures/partner/`, the profile each is read with,
and exactly what importing it must give: rows loaded, rejects by rule, and how the file
was read (dialect, encoding, header matches)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent / "fixtures" / "partner"
SHIPPED_PROFILES = Path(__file__).resolve().parent.parent / "profiles"


@dataclass(frozen=True)
class PartnerFile:
    name: str
    profile: str
    """A profile shipped in `profiles/`, or one of `TEST_PROFILES`."""
    inserted: int
    rejects_by_rule: dict[str, int]
    reading: dict[str, Any]
    """Fields of the report's `reading` the import must give."""
    matches: dict[str, str] = field(default_factory=dict)
    """column -> field, matched by map or loosely."""
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Rows (by id) as the table must hold them, as JSON-able values."""


TEST_PROFILES: dict[str, dict[str, Any]] = {
    "mainframe": {"resource": "users", "delimiter": "|", "encoding": "latin-1", "null_values": ["NULL"]},
    "sqlserver": {"resource": "users", "encoding": "utf-16"},
    "tab-export": {"resource": "users"},
    "sniffed": {"resource": "users", "delimiter": "auto"},
}

PARTNER_FILES = (
    PartnerFile(
        "excel-de.csv",
        "excel-de",
        inserted=3,
        rejects_by_rule={"invalid_email": 1, "invalid_boolean": 1, "invalid_timestamp": 1},
        reading={"delimiter": ";", "delimiter_from": "sep line", "encoding": "cp1252"},
        matches={"ID": "id", "E-Mail": "email", "Name": "name", "Rolle": "role", "Aktiv": "active"}
        | {"Erstellt am": "created_at"},
        rows={
            "p-de-1": {"name": "Anna Müller", "active": True, "created_at": "2024-12-31T12:45:00+00:00"},
            "p-de-2": {"name": "Jörg Weiß", "active": False, "created_at": "2024-01-31T23:00:00+00:00"},
            "p-de-3": {"name": "Greta; Ärztin", "active": True, "created_at": "2024-06-15T06:30:15+00:00"},
        },
    ),
    PartnerFile(
        "mainframe.csv",
        "mainframe",
        inserted=2,
        rejects_by_rule={"required": 1},
        reading={"delimiter": "|", "delimiter_from": "given", "encoding": "iso8859-1"},
        rows={
            "p-mf-1": {"name": "Otto Strauß", "active": True},
            "p-mf-2": {"name": None, "active": None, "created_at": None},
        },
    ),
    PartnerFile(
        "crm.csv",
        "crm",
        inserted=2,
        rejects_by_rule={"invalid_boolean": 1, "invalid_timestamp": 1},
        reading={"delimiter": ",", "delimiter_from": "default", "encoding": "utf-8"},
        matches={"User ID": "id", "Email Address": "email", "Full Name": "name", "Role": "role"}
        | {"Is Active": "active", "Created": "created_at"},
        rows={
            "p-crm-1": {"name": "Li Wei", "active": True, "created_at": "2024-03-15T13:30:00+00:00"},
            "p-crm-2": {"name": None, "active": False, "created_at": "2024-03-16T04:00:00+00:00"},
        },
    ),
    PartnerFile(
        "sqlserver-utf16.csv",
        "sqlserver",
        inserted=2,
        rejects_by_rule={},
        reading={"delimiter": ",", "encoding": "utf-16"},
        rows={"p-u16-1": {"name": "Zoë"}, "p-u16-2": {"name": "Yan 楊"}},
    ),
    PartnerFile(
        "export.tsv",
        "tab-export",
        inserted=2,
        rejects_by_rule={},
        reading={"delimiter": "\t", "delimiter_from": "file name"},
        matches={"Id": "id", "E Mail": "email", "NAME": "name", "Role": "role"},
        rows={"p-tsv-2": {"name": "Two, with comma"}},
    ),
    PartnerFile(
        "quoted-headers.csv",
        "sniffed",
        inserted=2,
        rejects_by_rule={},
        reading={"delimiter": ";", "delimiter_from": "sniffed"},
        matches={"Id": "id", "E-mail": "email", "Name": "name", "Role": "role", "Active": "active"},
        rows={"p-q-1": {"name": "Semi; colon"}, "p-q-2": {"name": 'Quote "inside"'}},
    ),
)
