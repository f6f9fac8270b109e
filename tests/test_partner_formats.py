"""The pure parts of reading partner files: dialects and sniffing, decoding, header
matches, value formats, the options and profiles that declare them. Nothing started."""

from __future__ import annotations

import codecs
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from bulkflow.errors import InputError
from bulkflow.settings import Settings
from decisions.parsers import parse_boolean, parse_timestamp
from files.dialect import resolve_dialect
from files.header import match_columns
from files.read import read_chunks
from files.staging import stage_source
from files.transcode import Transcoder, likely_encoding
from schemas import RESOURCES
from schemas.parameters import ImportOptions, Profile
from schemas.resource import ValueFormats

USERS = RESOURCES["users"]


def _fits_users(header: list[str]) -> bool:
    read = match_columns(USERS, "", header, {}).read
    return {"email", "role"} <= set(read)


def _dialect(
    tmp_path: Path, text: str, delimiter: str = "auto", fits: Callable[[list[str]], bool] = _fits_users
) -> tuple[str, str, bool]:
    path = tmp_path / "f.csv"
    path.write_bytes(text.encode())
    dialect = resolve_dialect(path, "f.csv", delimiter, '"', fits)
    return dialect.delimiter, dialect.delimiter_from, dialect.sep_line


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_auto_finds_the_one_delimiter_that_splits_header_and_records_alike(tmp_path: Path, delimiter: str) -> None:
    rows = [
        ["id", "email", "role", "name"],
        ["u1", "a@x.io", "reader", 'A "quoted; ,|" name'],
        ["u2", "b@x.io", "admin", ""],
    ]
    other = ";" if delimiter == "," else ","
    text = "".join(delimiter.join(f'"{v}"' if other in v or '"' in v else v for v in row) + "\n" for row in rows)
    text = text.replace('"A "quoted; ,|" name"', '"A ""quoted; ,|"" name"')
    assert _dialect(tmp_path, text) == (delimiter, "sniffed", False)


def test_auto_refuses_when_two_delimiters_fit_or_none(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="';' and '|' both fit"):
        _dialect(tmp_path, "a;b|c\n1;2|3\n", fits=lambda header: True)
    with pytest.raises(InputError, match="none of ',', ';', tab, '|' splits the header"):
        _dialect(tmp_path, "email;role\na@x.io;reader;extra\n")


def test_excels_sep_line_decides_and_is_not_the_header(tmp_path: Path) -> None:
    assert _dialect(tmp_path, "sep=;\nemail;role\n", ",") == (";", "sep line", True)
    assert _dialect(tmp_path, "\ufeffSEP=|\r\nemail|role\r\n") == ("|", "sep line", True)
    with pytest.raises(InputError, match="says sep=; on its first line, but the delimiter given is '|'"):
        _dialect(tmp_path, "sep=;\nemail;role\n", "|")


def test_a_sep_line_file_reads_with_physical_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b'sep=;\r\nid;email;role\r\nu1;a@x.io;reader\r\nu2;"b\r\nc@x.io";reader\r\nu3;d@x.io\r\n')
    staged = stage_source(str(path), settings=Settings(), reading=ImportOptions())
    [batch] = list(read_chunks(staged, USERS, 10))
    assert batch.rows.get_column("_line").to_list() == [3, 4, 6]
    assert batch.rows.get_column("_read_rule").to_list() == [None, None, "malformed_record"]


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16", "utf-16-le", "utf-8-sig", "shift_jis"])
def test_a_file_in_any_codec_is_staged_as_utf8_and_keeps_the_checksum_of_its_bytes(
    tmp_path: Path, encoding: str
) -> None:
    import hashlib

    text = (
        "id,email,name,role\nu1,a@x.io,Zoë Ärger,reader\n"
        if encoding != "shift_jis"
        else "id,email,name,role\nu1,a@x.io,日本,reader\n"
    )
    raw = text.encode(encoding)
    path = tmp_path / "f.csv"
    path.write_bytes(raw)
    staged = stage_source(str(path), settings=Settings(), reading=ImportOptions(encoding=encoding))
    assert staged.path.read_bytes().decode("utf-8").lstrip("\ufeff") == text
    assert staged.sha256 == hashlib.sha256(raw).hexdigest()
    assert staged.verbatim == (encoding == "utf-8-sig")  # a UTF-8 byte order mark is read in place


def test_a_wrong_encoding_is_refused_naming_the_line() -> None:
    decode = Transcoder("utf-16-le", "f.csv")
    with pytest.raises(InputError, match=r"f.csv is not valid utf-16-le \(line"):
        decode(b"a\x00\n\x00\x00\xdc", final=True)


def test_the_likely_encoding_of_bytes_that_are_not_utf8() -> None:
    assert likely_encoding("Jörg;Weiß\n".encode("cp1252")) == "cp1252"
    assert likely_encoding(b"\x81\xe4 text") == "latin-1"  # 0x81 means nothing in cp1252
    assert likely_encoding(codecs.BOM_UTF16_LE + "id".encode("utf-16-le")) == "utf-16"
    assert likely_encoding("id,email\n".encode("utf-16-le")) == "utf-16-le"
    assert likely_encoding(b"plain ascii") is None


@pytest.mark.parametrize("cut", range(1, 12))
def test_backslash_escapes_become_doubled_quotes_across_any_block_boundary(cut: int) -> None:
    source = b'"a \\"b\\" \\\\ c",\\n\n'
    decode = Transcoder("utf-8", "f.csv", '"', "\\")
    assert decode(source[:cut]) + decode(source[cut:]) + decode.flush() == b'"a ""b"" \\ c",\\n\n'


def test_headers_match_by_map_or_loosely_and_refuse_what_cannot_be() -> None:
    match = match_columns(USERS, "f.csv", ["User ID", "E-Mail", "ROLE", "created at", "extra"], {"User ID": "id"})
    assert {m.column: (m.field, m.by) for m in match.matches} == {
        "User ID": ("id", "map"),
        "E-Mail": ("email", "loose"),
        "ROLE": ("role", "loose"),
        "created at": ("created_at", "loose"),
    }
    assert match.read == ("id", "email", "role", "created_at", "extra")
    assert match_columns(USERS, "f.csv", ["\ufeff_Name_"], {}).read == ("name",)
    with pytest.raises(InputError, match="the map names nickname, which users does not have"):
        match_columns(USERS, "f.csv", ["a"], {"a": "nickname"})
    with pytest.raises(InputError, match=r"several columns are read as one field \(email: 'Email', 'Mail'\)"):
        match_columns(USERS, "f.csv", ["Email", "Mail"], {"Mail": "email"})


def test_value_formats_read_the_partners_words_and_patterns_in_its_time_zone() -> None:
    values = ValueFormats(
        true_values=("Ja", "J"),
        false_values=("Nein",),
        timestamp_formats=("%d.%m.%Y %H:%M", "%d.%m.%Y"),
        timezone="Europe/Berlin",
    )
    words = pl.Series(["ja", " NEIN ", "j", "true", None])
    assert pl.select(parse_boolean(pl.lit(words), values)).to_series().to_list() == [True, False, True, None, None]
    stamps = pl.Series(
        ["31.12.2024 13:45", "01.07.2024", "2024-05-01T12:00:00Z", "2024-05-01 12:00", "31.03.2024 02:30"]
    )
    utc = UTC
    assert pl.select(parse_timestamp(pl.lit(stamps), values)).to_series().to_list() == [
        datetime(2024, 12, 31, 12, 45, tzinfo=utc),
        datetime(2024, 6, 30, 22, 0, tzinfo=utc),
        datetime(2024, 5, 1, 12, 0, tzinfo=utc),
        datetime(2024, 5, 1, 10, 0, tzinfo=utc),
        None,  # 02:30 did not happen in Berlin that night
    ]
    assert values.words()["booleans"] == "Ja or J (true) or Nein (false)"
    assert ValueFormats().words() == {
        "booleans": "true or false",
        "timestamps": "an ISO-8601 timestamp, e.g. 2024-05-01T12:00:00Z",
    }


def test_options_take_text_lists_and_maps_and_refuse_what_they_cannot_use() -> None:
    options = ImportOptions.model_validate(
        {"delimiter": "\\t", "null_values": "NULL, N/A,\\N", "map": "Email Address=email, User ID=id"}
    )
    assert (options.delimiter, options.null_values) == ("\t", ["NULL", "N/A", "\\N"])
    assert options.map == {"Email Address": "email", "User ID": "id"}
    for bad in ({"delimiter": ";;"}, {"quote": "\n"}, {"encoding": "klingon"}, {"timezone": "Mars/Base"}):
        with pytest.raises(ValidationError):
            ImportOptions.model_validate(bad)
    with pytest.raises(ValidationError, match="not HEADER=field"):
        ImportOptions.model_validate({"map": "Email Address"})
    with pytest.raises(ValidationError, match="not a strftime pattern"):
        ImportOptions.model_validate({"timestamp_format": ["dd.mm.yyyy"]})


def test_explicit_options_win_over_the_profile_and_the_rest_is_the_profiles() -> None:
    profile = Profile(resource="users", delimiter=";", encoding="cp1252", chunk_size=10, true_values=["Ja"])
    merged = ImportOptions(encoding="latin-1", mode="upsert", dry_run=True).under("de", profile)
    assert (merged.profile, merged.delimiter, merged.encoding, merged.chunk_size) == ("de", ";", "iso8859-1", 10)
    assert (merged.true_values, merged.dry_run) == (["Ja"], True)
    with pytest.raises(ValidationError, match="does not name another profile"):
        Profile(profile="other")


def test_read_options_other_than_the_defaults_make_another_job() -> None:
    from tasks.jobs import job_key

    plain = job_key("users", "ab" * 32, ImportOptions(), None)
    assert job_key("users", "ab" * 32, ImportOptions(on_drift="block"), None) == plain
    semicolon = job_key("users", "ab" * 32, ImportOptions(delimiter=";"), None)
    assert semicolon.startswith(plain + ":read-") and semicolon != job_key(
        "users", "ab" * 32, ImportOptions(delimiter="|"), None
    )


def test_a_json_array_followed_by_anything_but_blanks_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text('[{"id": "u1"}]\n \n')
    stage_source(str(path), settings=Settings()).cleanup()
    path.write_text('[{"id": "u1"}] [{"id": "u2"}]')
    with pytest.raises(InputError, match=r"followed by '\[\{\"id\": \"u2\"\}\]'"):
        stage_source(str(path), settings=Settings())


def test_the_report_notes_what_was_decided_about_the_file_and_nothing_for_a_plain_one() -> None:
    from schemas.reports import ColumnDrift, FileReading, HeaderMatch

    assert FileReading(delimiter=",", delimiter_from="default").notes() == []
    reading = FileReading(
        profile="excel-de",
        encoding="cp1252",
        delimiter=";",
        delimiter_from="sniffed",
        header_matches=[HeaderMatch(column="E-Mail", field="email", by="loose")],
        drift=ColumnDrift(added=["Region"], missing=[], previous_job="import:users:ab"),
    )
    assert reading.notes() == [
        ("profile", "excel-de"),
        ("delimiter", "';' (sniffed)"),
        ("encoding", "cp1252"),
        ("header", "'E-Mail' read as email (loose)"),
        ("column drift", "the file adds Region against the previous import (import:users:ab)"),
    ]
