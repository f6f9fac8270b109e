"""Sources and readers: staging, formats, line numbers, exact chunks, clear input errors."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from bulkflow.errors import InputError, ParameterError
from bulkflow.settings import Settings
from files.columns import read_columns
from files.formats import detect_format
from files.read import read_chunks
from files.records import BLOCK_BYTES
from files.staging import stage_source
from schemas import RESOURCES
from schemas.columns import LINE, RAW_RECORD, READ_MESSAGE, READ_RULE

USERS = RESOURCES["users"]


def chunks(path: Path, size: int = 1000, resource: str = "users") -> list[pl.DataFrame]:
    return [
        batch.rows for batch in read_chunks(stage_source(str(path), settings=Settings()), RESOURCES[resource], size)
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.csv", ("csv", None)),
        ("a.CSV.GZ", ("csv", "gzip")),
        ("a.jsonl", ("ndjson", None)),
        ("s3://b/k/a.parquet", ("parquet", None)),
        ("https://x/a.json?sig=1", ("json", None)),
    ],
)
def test_detect_format(name: str, expected: tuple) -> None:
    assert detect_format(name) == expected


def test_csv_bom_crlf_quotes_and_physical_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes(
        b'\xef\xbb\xbfid,email,name,role\r\nu1,a@x.io,"Smith, J",admin\r\n'
        b'u2,b@x.io,"two\r\nlines ""quoted""",reader\r\nu3,c@x.io,,reader\r\n'
    )
    [chunk] = chunks(path)
    assert chunk[LINE].to_list() == [2, 3, 5]
    assert chunk["id"].to_list() == ["u1", "u2", "u3"]  # the BOM is not part of the first name
    assert chunk["name"].to_list() == ["Smith, J", 'two\r\nlines "quoted"', None]
    assert read_columns(stage_source(str(path), settings=Settings()), 1 << 20) == ["id", "email", "name", "role"]


def test_chunks_have_exact_sizes_and_lines_continue(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_text("id,email,name,role\n" + "".join(f'u{i},e{i}@x.io,"n\n{i}",admin\n' for i in range(10)))
    parts = chunks(path, size=4)
    assert [c.height for c in parts] == [4, 4, 2]
    assert pl.concat(parts)[LINE].to_list() == list(range(2, 22, 2))


@pytest.mark.parametrize("block", [40, 1 << 20])
def test_a_file_without_quotes_numbers_its_lines_across_blocks_and_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """No value of a block without a quote spans lines: each record is one line, counted
    across blocks and chunks, and a blank line still counts."""
    import files.records

    monkeypatch.setattr(files.records, "BLOCK_BYTES", block)
    path = tmp_path / "u.csv"
    path.write_text("id,email,name,role\n" + "".join(f"u{i},e{i}@x.io,N {i},admin\n" for i in range(10)))
    assert [c[LINE].to_list() for c in chunks(path, size=4)] == [[2, 3, 4, 5], [6, 7, 8, 9], [10, 11]]
    path.write_text("id,email,name,role\nu1,a@x.io,A,admin\n\nu2,b@x.io,B,admin\nu3,c@x.io,C,admin\n")
    [chunk] = chunks(path)
    assert chunk[LINE].to_list() == [2, 4, 5] and chunk["name"].to_list() == ["A", "B", "C"]


def test_ndjson_values_malformed_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "u.ndjson"
    path.write_text(
        '{"id": 1, "email": "a@x.io", "active": true, "extra": {"k": 1}}\n'
        "\n"
        '{"id": "u2", oops\n'
        "[1, 2]\n"
        '{"id": "u5", "email": null, "name": "Zoë"}\r\n'
    )
    [chunk] = chunks(path)
    assert chunk[LINE].to_list() == [1, 3, 4, 5]
    assert chunk[READ_RULE].is_null().to_list() == [True, False, False, True]
    assert chunk.row(0, named=True)["id"] == "1" and chunk.row(0, named=True)["active"] == "true"
    assert chunk.row(3, named=True)["name"] == "Zoë" and chunk.row(3, named=True)["email"] is None


def test_json_array_is_streamed_to_ndjson(tmp_path: Path) -> None:
    path = tmp_path / "u.json"
    records = [{"id": f"u{i}", "email": f"e{i}@x.io", "role": "admin"} for i in range(5)]
    path.write_text(json.dumps(records, indent=2))
    staged = stage_source(str(path), settings=Settings())
    assert staged.format == "ndjson" and staged.declared_format == "json" and staged.temporary
    [chunk] = [batch.rows for batch in read_chunks(staged, USERS, 100)]
    assert chunk["id"].to_list() == [f"u{i}" for i in range(5)]
    assert chunk[LINE].to_list() == [1, 2, 3, 4, 5]  # element numbers
    staged.cleanup()
    assert not staged.path.exists()


@pytest.mark.parametrize("text", ['{"id": 1}', "[1, 2", '[{"id": "u1"}, {"id": ]'])
def test_broken_json_array_is_an_input_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError, match="JSON array"):
        stage_source(str(path), settings=Settings())


def test_gzip_is_decompressed_and_hashed_like_the_plain_file(tmp_path: Path) -> None:
    plain = tmp_path / "u.csv"
    plain.write_text("id,email,role\nu1,a@x.io,admin\n")
    packed = tmp_path / "u.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert stage_source(str(packed), settings=Settings()).sha256 == stage_source(str(plain), settings=Settings()).sha256
    assert chunks(packed)[0]["email"].to_list() == ["a@x.io"]


def test_parquet_typed_columns_become_the_text_the_parsers_read(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    pl.DataFrame(
        {
            "id": ["a1"],
            "slug": ["s"],
            "tags": [["x", 'q"y']],
            "status": ["published"],
            "published_at": [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)],
        },
    ).write_parquet(path)
    [chunk] = chunks(path, resource="articles")
    row = chunk.row(0, named=True)
    assert json.loads(row["tags"]) == ["x", 'q"y']
    assert row["published_at"] == "2024-01-02T03:04:05.000000+00:00"
    assert row[LINE] == 1


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,email\nu1,a@x.io\nu2,caf\xe9@x.io\n")
    with pytest.raises(InputError, match=r"not valid UTF-8 \(line 3"):
        stage_source(str(path), settings=Settings())


def _padded_to_block(head: bytes, tail: bytes) -> bytes:
    """`head`, ASCII lines up to one byte short of a block's end, then `tail`."""
    line = b"u0,a@x.io\n"
    filler = line * ((BLOCK_BYTES - len(head) - 1) // len(line))
    return head + filler + b"#" * (BLOCK_BYTES - 1 - len(head) - len(filler)) + tail


def test_invalid_utf8_after_an_ascii_block_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    content = _padded_to_block(b"id,email\n", b"\nu2,caf\xe9@x.io\n")
    path.write_bytes(content)
    bad_line = content[: content.index(b"\xe9")].count(b"\n") + 1
    with pytest.raises(InputError, match=rf"not valid UTF-8 \(line {bad_line},"):
        stage_source(str(path), settings=Settings())


def test_a_character_split_between_blocks_is_utf8(tmp_path: Path) -> None:
    path = tmp_path / "split.csv"
    # "é" is two bytes: the first ends one block, the second begins an ASCII-looking next one
    path.write_bytes(_padded_to_block(b"id,email\n", "é\nu2,b@x.io\n".encode()))
    assert stage_source(str(path), settings=Settings()).size_bytes == path.stat().st_size


def test_a_character_cut_at_a_block_end_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv"
    path.write_bytes(_padded_to_block(b"id,email\n", b"\xc3" + b"\nu2,b@x.io\n"))
    with pytest.raises(InputError, match="not valid UTF-8"):
        stage_source(str(path), settings=Settings())


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="is empty"):
        stage_source(str(path), settings=Settings())


def test_unknown_format_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match="unknown format"):
        detect_format("a.csv", "xlsx")


def test_ragged_csv_rows_are_unreadable_rows_and_the_others_go_on(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("id,email,role\nu1,a@x.io,admin,EXTRA,MORE\nu2,b@x.io\n\nu3,c@x.io,admin\n")
    [chunk] = chunks(path)
    assert chunk[LINE].to_list() == [2, 3, 5]
    assert chunk[READ_RULE].to_list() == ["malformed_record", "malformed_record", None]
    assert chunk[READ_MESSAGE][0] == "the record has 5 fields, the header has 3"
    assert chunk[RAW_RECORD][1] == "u2,b@x.io" and chunk["id"][2] == "u3"


@pytest.mark.parametrize("block", [7, 64, 1 << 20])
def test_records_spanning_block_boundaries_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    import files.records

    monkeypatch.setattr(files.records, "BLOCK_BYTES", block)
    csv = tmp_path / "u.csv"
    csv.write_text(
        "id,email,name,role\n"
        + "".join(f'u{i},e{i}@x.io,"multi\nline, ""{i}""",admin\n' for i in range(40))
        + "u40,e@x.io,last,admin"
    )
    [chunk] = chunks(csv)
    assert chunk["id"].to_list() == [f"u{i}" for i in range(41)]
    assert chunk["name"][3] == 'multi\nline, "3"'
    assert chunk[LINE].to_list()[-2:] == [80, 82]
    ndjson = tmp_path / "u.ndjson"
    ndjson.write_text("".join(f'{{"id": "u{i}", "name": "n\\n{i}"}}\n' for i in range(30)) + "\n" + '{"id": "last"}')
    [lines] = chunks(ndjson)
    assert lines["id"].to_list() == [f"u{i}" for i in range(30)] + ["last"]
    assert lines[LINE].to_list()[-1] == 32


def test_a_long_field_in_a_block_read_record_by_record_is_kept(tmp_path: Path) -> None:
    """A ragged row sends its block down the careful path; a 300 KB field beside it (over the
    csv module's default field limit, far under the record limit) is still a value."""
    path = tmp_path / "long.csv"
    path.write_text('id,email,name,role\nu1,a@x.io,"' + "x" * 300_000 + '",admin\nu2,b@x.io,oops\n')
    [chunk] = chunks(path)
    assert chunk[READ_RULE].to_list() == [None, "malformed_record"]
    assert len(chunk["name"][0]) == 300_000


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("crlf.csv", b'id,email,role\r\nu1,a@x.io,admin\r\nu2,"b\r\n@x.io",reader\r\nu3,c@x.io,reader'),
        ("cr.csv", b"id,email,role\ru1,a@x.io,admin\ru2,b@x.io,reader\r"),
        ("lines.ndjson", b'{"id":"u1","email":"a@x.io","role":"admin"}\n\n{"id":"u2","email":"b@x.io","role":"x"}\n'),
        ("array.json", b'[{"id":"u1","email":"a@x.io","role":"admin"},{"id":"u2","email":"b@x.io","role":"x"}]'),
        ("one-line.json", b'[{"id":"u1","email":"a@x.io","role":"admin"}]'),
    ],
)
def test_a_small_files_records_are_bounded_by_its_lines(tmp_path: Path, name: str, content: bytes) -> None:
    """What tells a file of one chunk before it is staged (`records_at_most`): never fewer
    than the records it holds."""
    from files.formats import records_at_most

    path = tmp_path / name
    path.write_bytes(content)
    read = sum(chunk.height for chunk in chunks(path))
    bound = records_at_most(str(path), None)
    assert bound is not None and read <= bound <= len(content) + 1


def test_only_local_uncompressed_text_files_are_counted(tmp_path: Path) -> None:
    from files.formats import records_at_most

    (tmp_path / "u.csv.gz").write_bytes(gzip.compress(b"id,email,role\nu1,a@x.io,admin\n"))
    pl.DataFrame({"id": ["u1"]}).write_parquet(tmp_path / "u.parquet")
    assert records_at_most(str(tmp_path / "u.csv.gz"), None) is None  # compressed: its bytes say nothing
    assert records_at_most(str(tmp_path / "u.parquet"), None) is None
    assert records_at_most("https://example.com/u.csv", None) is None
    assert records_at_most(str(tmp_path / "missing.csv"), None) is None  # staging says what is wrong
    assert records_at_most(str(tmp_path / "u.txt"), None) is None  # no format: staging refuses it
    (tmp_path / "u.txt").write_bytes(b"id\nu1\n")
    assert records_at_most(str(tmp_path / "u.txt"), "csv") == 3
