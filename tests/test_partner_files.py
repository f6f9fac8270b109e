"""Partner files as they come (`tests/partner_corpus.py`): each read with its profile, as
it is and gzipped, loads exactly the rows it should, rejects the rest by rule, and its
report says how it was read."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from schemas.reports import ImportReport
from tests.helpers import import_file, rejects_of, reset_imports, sql
from tests.partner_corpus import CORPUS, PARTNER_FILES, PartnerFile

pytestmark = pytest.mark.usefixtures("prefect_api", "db")


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
    check_rows(expected)


def check_rows(expected: PartnerFile) -> None:
    """The table holds the corpus's rows as it gives them."""
    for row_id, values in expected.rows.items():
        [stored] = sql(f"SELECT {', '.join(values)} FROM users WHERE id = '{row_id}'")
        assert dict(zip(values, (_json_value(v) for v in stored))) == values, row_id


def _json_value(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("expected", PARTNER_FILES, ids=[f.name for f in PARTNER_FILES])
def test_a_partner_file_loads_as_its_profile_says(expected: PartnerFile, compressed: bool, tmp_path: Path) -> None:
    reset_imports()
    source = CORPUS / expected.name
    if compressed:
        packed = tmp_path / f"{expected.name}.gz"
        packed.write_bytes(gzip.compress(source.read_bytes()))
        source = packed
    check_outcome(expected, import_file("users", source, profile=expected.profile))


def test_explicit_options_override_the_profile() -> None:
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


def test_an_unknown_profile_names_the_profiles_there_are() -> None:
    from bulkflow.errors import ParameterError

    with pytest.raises(ParameterError, match=r"no profile 'acme'.*crm, excel-de"):
        import_file("users", CORPUS / "crm.csv", profile="acme")


def test_a_drift_in_the_columns_is_reported_then_blocked_when_asked(tmp_path: Path) -> None:
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


@pytest.mark.usefixtures("served")
def test_partner_files_land_in_their_profiles_folder_and_load_as_it_says(tmp_path: Path) -> None:
    """`<landing>/<profile>/<resource>/<file>`: each file, gzipped, is imported with its
    folder's profile by the served deployment's runner, with the outcome the corpus gives."""
    from flows.landing_flow import landing_pickup

    reset_imports()
    for expected in PARTNER_FILES:
        folder = tmp_path / expected.profile / "users"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{expected.name}.gz").write_bytes(gzip.compress((CORPUS / expected.name).read_bytes()))
    outcomes = landing_pickup(landing=str(tmp_path))
    assert sorted(Path(p).name for p in outcomes["imported"]) == sorted(f"{f.name}.gz" for f in PARTNER_FILES)
    for expected in PARTNER_FILES:
        check_job(expected, f"{expected.name}.gz")


def check_job(expected: PartnerFile, name: str) -> None:
    """The job of a file imported elsewhere (a served run) holds what the corpus says: its
    totals, its profile and the columns it read, and the rows."""
    from bulkflow.settings import Settings
    from tasks.jobs import job_totals

    [(key, profile, columns)] = sql(f"SELECT job_key, profile, columns FROM import_jobs WHERE source_name = '{name}'")
    totals = job_totals(Settings(), key)
    assert (totals.inserted, totals.rejects_by_rule) == (expected.inserted, expected.rejects_by_rule)
    assert profile == expected.profile
    assert set(expected.matches.values()) <= set(json.loads(columns) if isinstance(columns, str) else columns)
    check_rows(expected)


@pytest.mark.usefixtures("served")
def test_an_upload_names_its_profile_and_loads_as_it_says() -> None:
    """The API's form takes `profile` like any option: each file uploaded with its profile
    ends as the corpus says."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from bulkflow.settings import Settings
    from tests.test_api import finished

    reset_imports()
    with TestClient(create_app(Settings())) as client:
        status_urls = []
        for expected in PARTNER_FILES:
            form = {"resource": "users", "profile": expected.profile}
            answer = client.post(
                "/v1/imports", files={"file": (expected.name, (CORPUS / expected.name).read_bytes())}, data=form
            )
            assert answer.status_code == 202, answer.text
            status_urls.append(answer.json()["status_url"])
        jobs = [finished(client, url) for url in status_urls]
    for expected, job in zip(PARTNER_FILES, jobs, strict=True):
        assert job["status"] == "completed", (expected.name, job.get("error"))
        assert (job["inserted"], job["rejects_by_rule"]) == (expected.inserted, expected.rejects_by_rule)
        check_job(expected, expected.name)


def test_a_replay_of_a_partner_files_rejects_is_read_as_bulkflow_wrote_it_with_the_partners_values() -> None:
    """`--rejects-of` with the profile: the replay file is bulkflow's own CSV (`,`, UTF-8,
    the fields' names), so the profile's dialect, encoding and map do not apply to it;
    its value formats do (`NULL` is still no value)."""
    reset_imports()
    first = import_file("users", CORPUS / "mainframe.csv", profile="mainframe")
    replay = import_file("users", "", rejects_of=first.job_key, profile="mainframe")
    assert (replay.rows_read, replay.rejected, replay.rejects_by_rule) == (1, 1, {"required": 1})
    assert (replay.reading.delimiter, replay.reading.encoding) == (",", "utf-8")
