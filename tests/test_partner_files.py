"""Partner files as they come (`tests/partner_corpus.py`): each read with its profile, as
it is and gzipped, loads exactly the rows it should, rejects the rest by rule, and its
report says how it was read."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.reports import ImportReport
from tests.helpers import import_file, rejects_of, reset_imports, sql
from tests.partner_corpus import CORPUS, PARTNER_FILES, SHIPPED_PROFILES, TEST_PROFILES, PartnerFile

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


@pytest.fixture()
def profiles(tmp_path: Path, settings_env: Any) -> Path:
    """A profiles folder with the shipped profiles and the corpus's own."""
    folder = tmp_path / "profiles"
    shutil.copytree(SHIPPED_PROFILES, folder)
    for name, content in TEST_PROFILES.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(content, allow_unicode=True), encoding="utf-8")
    settings_env(BULKFLOW_PROFILES_DIR=str(folder))
    return folder


def check_outcome(expected: PartnerFile, report: ImportReport) -> None:
    """The report and the table hold what the corpus says the file gives."""
    rejected = sum(1 for _ in {line for line, *_ in rejects_of(report.job_key)})
    assert (report.inserted, report.rejected, report.rows_read) == (
        expected.inserted,
        rejected,
        expected.inserted + rejected,
    )
    assert report.rejects_by_rule == expected.rejects_by_rule
    assert report.reading.profile == expected.profile
    assert report.reading.model_dump(include=set(expected.reading)) == expected.reading
    assert {m.column: m.field for m in report.reading.header_matches} == expected.matches
    for row_id, values in expected.rows.items():
        columns = ", ".join(values)
        [stored] = sql(f"SELECT {columns} FROM users WHERE id = '{row_id}'")
        assert dict(zip(values, (_json_value(v) for v in stored))) == values, row_id


def _json_value(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("expected", PARTNER_FILES, ids=[f.name for f in PARTNER_FILES])
def test_a_partner_file_loads_as_its_profile_says(
    expected: PartnerFile, compressed: bool, profiles: Path, tmp_path: Path
) -> None:
    reset_imports()
    source = CORPUS / expected.name
    if compressed:
        packed = tmp_path / f"{expected.name}.gz"
        packed.write_bytes(gzip.compress(source.read_bytes()))
        source = packed
    check_outcome(expected, import_file("users", source, profile=expected.profile))


def test_explicit_options_override_the_profile(profiles: Path) -> None:
    """The profile says `|`, latin-1 and `NULL` for no value; the call says `N/A` is: the
    file is read as the profile says, but `NULL` is now a value like any other."""
    reset_imports()
    report = import_file("users", CORPUS / "mainframe.csv", profile="mainframe", null_values=["N/A"])
    assert (report.reading.delimiter, report.reading.encoding) == ("|", "iso8859-1")
    assert report.rejects_by_rule == {"invalid_boolean": 1, "invalid_timestamp": 1, "invalid_email": 1}
    assert sql("SELECT name FROM users WHERE id = 'p-mf-1'") == [("Otto Strauß",)]


def test_without_its_profile_a_partner_file_is_refused_and_says_what_to_pass() -> None:
    from bulkflow.errors import InputError

    with pytest.raises(InputError, match="looks like cp1252: pass --encoding cp1252"):
        import_file("users", CORPUS / "excel-de.csv")


def test_an_unknown_profile_names_the_profiles_there_are(profiles: Path) -> None:
    from bulkflow.errors import ParameterError

    with pytest.raises(ParameterError, match=r"no profile 'acme'.*crm, excel-de"):
        import_file("users", CORPUS / "crm.csv", profile="acme")


def test_a_drift_in_the_columns_is_reported_then_blocked_when_asked(profiles: Path, tmp_path: Path) -> None:
    """The crm profile blocks a drift: a file that adds a column against the previous crm
    import is refused before anything is written; without a profile the drift only warns."""
    from bulkflow.errors import InputError

    reset_imports()
    import_file("users", CORPUS / "crm.csv", profile="crm")
    drifted = tmp_path / "crm-more.csv"
    lines = (CORPUS / "crm.csv").read_text().splitlines()
    drifted.write_text("\n".join([lines[0] + ",Region", *(line + ",EU" for line in lines[1:])]) + "\n")
    before = sql("SELECT count(*) FROM users")
    with pytest.raises(InputError, match="adds Region against the previous import"):
        import_file("users", drifted, profile="crm")
    assert sql("SELECT count(*) FROM users") == before
    plain = tmp_path / "plain.csv"
    plain.write_text("id,email,role\nd1,d1@example.com,reader\n")
    import_file("users", plain)
    report = import_file("users", CORPUS / "sqlserver-utf16.csv", encoding="utf-16")
    assert report.reading.drift is not None and report.reading.drift.added == ["name"]
    assert report.inserted == 2
