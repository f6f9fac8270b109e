"""Chunk spans: a chunk read alone from its span (as a Dask worker reads it) is the very
chunk the whole-file reader gives, for every format and every odd record there is."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from bulkflow.settings import Settings
from files.read import read_chunks, read_span, shared_file
from files.spans import plan_spans
from files.staging import StagedSource, stage_source
from schemas import RESOURCES
from schemas.columns import LINE
from schemas.parameters import ImportOptions

USERS = RESOURCES["users"]
MAX_RECORD = 1024

_csv_records = st.sampled_from(
    [
        b"u1,a@x.io,Ann,admin\n",
        b'u2,b@x.io,"two\nlines, ""quoted""",reader\n',
        b"\n",
        b"\r\n",
        b"u3,c@x.io,ragged\n",
        b'u4,d@x.io,"' + b"x" * 1500 + b'",reader\n',  # over MAX_RECORD: record_too_large
        b"u5,e@x.io,,reader\r\n",
        b"   \n",
    ]
)
_ndjson_lines = st.sampled_from(
    [
        b'{"id":"u1","email":"a@x.io","role":"admin"}\n',
        b"\n",
        b"  \t \n",
        b"not json\n",
        b'{"id":"u2","name":"' + b"y" * 1500 + b'"}\n',
        b'{"id":"u3","email":"\\u00e9@x.io"}\r\n',
        b"[1,2]\n",
    ]
)


def _spans_match_chunks(path: Path, size: int, reading: ImportOptions = ImportOptions()) -> list[pl.DataFrame]:
    """Assert that each span read alone is its chunk; the chunks."""
    staged = stage_source(str(path), settings=Settings(), reading=reading)
    whole = [batch.rows for batch in read_chunks(staged, USERS, size, MAX_RECORD)]
    spans = list(plan_spans(staged, size, MAX_RECORD))
    shared = shared_file(staged, MAX_RECORD)
    assert [span.index for span in spans] == list(range(len(whole)))
    with open(shared.location, "rb") as stream:
        for span, chunk in zip(spans, whole, strict=True):
            assert_frame_equal(*_aligned(read_span(stream, shared, USERS, span, MAX_RECORD), chunk))
    return whole


def _aligned(left: pl.DataFrame, right: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The two frames with the same columns: a reader's column that a chunk lacks (say
    `_read_rule`, set only in blocks with an unreadable record) is null there, which is
    what every later step reads an absent one as."""
    both = pl.concat([left.clear(), right.clear()], how="diagonal_relaxed")
    return pl.concat([both, left], how="diagonal_relaxed"), pl.concat([both, right], how="diagonal_relaxed")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_csv_records, min_size=1, max_size=40), size=st.integers(1, 7), last_newline=st.booleans())
def test_csv_spans_read_alone_are_the_chunks(
    tmp_path: Path, records: list[bytes], size: int, last_newline: bool
) -> None:
    body = b"".join(records)
    path = tmp_path / "u.csv"
    path.write_bytes(b"\xef\xbb\xbfid,email,name,role\r\n" + (body if last_newline else body.rstrip(b"\n")))
    _spans_match_chunks(path, size)


DIALECTS = ((";", '"', "cp1252"), ("\t", '"', "utf-8"), ("|", "'", "latin-1"), (",", "'", "utf-16"))
"""(delimiter, quote, encoding): partner shapes the records are written in."""


@pytest.mark.parametrize(("delimiter", "quote", "encoding"), DIALECTS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_csv_records, min_size=1, max_size=30), size=st.integers(1, 7))
def test_csv_spans_in_every_dialect_and_encoding_are_the_chunks_with_the_same_lines(
    tmp_path: Path, records: list[bytes], size: int, delimiter: str, quote: str, encoding: str
) -> None:
    """The same records written with another delimiter, quote and encoding: spans still
    read alone as their chunks, and the rows and lines are those of the plain file."""
    plain = b"id,email,name,role\r\n" + b"".join(records)
    path = tmp_path / "u.csv"
    path.write_bytes(plain)
    expected = [chunk.get_column(LINE).to_list() for chunk in _spans_match_chunks(path, size)]
    written = plain.replace(b",", delimiter.encode()).replace(b'"', quote.encode()).decode().replace("x", "ä")
    path.write_bytes(written.encode(encoding))
    reading = ImportOptions(delimiter=delimiter, quote=quote, encoding=encoding)
    assert [chunk.get_column(LINE).to_list() for chunk in _spans_match_chunks(path, size, reading)] == expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_ndjson_lines, min_size=1, max_size=40), size=st.integers(1, 7), bom=st.booleans())
def test_ndjson_spans_read_alone_are_the_chunks(tmp_path: Path, lines: list[bytes], size: int, bom: bool) -> None:
    path = tmp_path / "u.ndjson"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"".join(lines))
    _spans_match_chunks(path, size)


def test_parquet_spans_cross_row_groups(tmp_path: Path) -> None:
    rows = [{"id": f"u{i}", "email": f"u{i}@x.io", "name": json.dumps(i)} for i in range(1, 101)]
    path = tmp_path / "u.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=17)
    _spans_match_chunks(path, 30)


def test_a_one_column_csv_skips_blank_lines_as_every_csv_does(tmp_path: Path) -> None:
    path = tmp_path / "u.csv"
    path.write_bytes(b"email\na@x.io\n\nb@x.io\n")
    [chunk] = [batch.rows for batch in read_chunks(stage_source(str(path), settings=Settings()), USERS, 10)]
    assert chunk.select(LINE, "email").rows() == [(2, "a@x.io"), (4, "b@x.io")]
    assert chunk.height == pl.DataFrame({"email": ["a@x.io", "b@x.io"]}).height


def test_workers_read_an_object_store_source_itself_and_a_rewritten_one_at_its_staged_copy(tmp_path: Path) -> None:
    copy = tmp_path / "staged.csv"
    copy.write_bytes(b"id,email\nu1,a@x.io\n")

    def staged(source: str, verbatim: bool) -> StagedSource:
        return StagedSource(
            source, copy, "csv", "csv", "0" * 64, copy.stat().st_size, temporary=True, verbatim=verbatim
        )

    assert shared_file(staged("s3://bucket/in/u.csv", True), MAX_RECORD).location == "s3://bucket/in/u.csv"
    assert shared_file(staged("s3://bucket/in/u.csv.gz", False), MAX_RECORD).location == str(copy.resolve())
    assert shared_file(staged("https://x.io/u.csv", True), MAX_RECORD).location == str(copy.resolve())
    read = shared_file(staged("s3://bucket/in/u.csv", True), MAX_RECORD)
    assert read.csv is not None and (read.csv.names, read.csv.header) == (("id", "email"), b"id,email\n")


def test_a_worker_that_cannot_reach_the_file_says_where_files_must_be(tmp_path: Path) -> None:
    from bulkflow.errors import ParameterError
    from files.batches import ChunkSpan
    from files.dialect import CsvDialect
    from files.header import ColumnMatch
    from files.read import CsvLayout, SharedFile
    from tasks.on_workers import _read_and_check

    layout = CsvLayout(CsvDialect(), ("id",), b"id\n")
    gone = SharedFile("u.csv", str(tmp_path / "not-shared.csv"), "csv", "csv", ColumnMatch(), layout)
    with pytest.raises(ParameterError, match="storage every worker reaches"):
        _read_and_check(Settings(), USERS, gone, ChunkSpan(0, 0, 10, 1, 1, 1.0))
