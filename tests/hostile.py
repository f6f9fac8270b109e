"""The hostile corpus: files a partner can send, and what importing each one must give.

Every case is either *loaded* (rows read, rejects by rule, rows written: loaded + rejected
= rows read) or *refused* (exit 2, one `error:` line naming what to fix, nothing written).
`python -m tests.hostile DIR` writes the files, to try them by hand.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

HEADER = "id,email,name,role,active,created_at,updated_at"
MiB = 1 << 20
SMALL_RECORDS = {"BULKFLOW_MAX_RECORD_BYTES": str(MiB)}


def row(i: int, **values: str) -> str:
    """A valid users CSV row; `values` override fields."""
    fields = {
        "id": f"u{i}",
        "email": f"u{i}@x.io",
        "name": f"User {i}",
        "role": "reader",
        "active": "true",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "",
    } | values
    return ",".join(fields[name] for name in HEADER.split(",")) + "\n"


def users_csv(*rows: str, header: str = HEADER + "\n") -> bytes:
    return (header + "".join(rows)).encode()


def user(i: int, **values: object) -> dict[str, object]:
    return {"id": f"u{i}", "email": f"u{i}@x.io", "name": f"User {i}", "role": "reader"} | values


def ndjson(*lines: object) -> bytes:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines).encode()


def parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _bomb(limit: int) -> bytes:
    """A small gzip file that expands to 12x `limit` of valid CSV rows."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = row(1).encode() * (MiB // 64)
    parts = [packer.compress(HEADER.encode() + b"\n")]
    parts += [packer.compress(block) for _ in range(12 * limit // len(block))]
    return b"".join(parts) + packer.flush()


@dataclass(frozen=True)
class Case:
    name: str
    resource: str
    filename: str
    content: bytes | Callable[[Path], None]
    """The file's bytes, or a function that makes the file at the given path."""
    refused: str | None = None
    """For a refused file: a fragment of the one-line error."""
    rows_read: int = 0
    rejects: dict[str, int] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    chunk_size: int | None = None

    @property
    def loaded(self) -> int:
        return self.rows_read - sum(self.rejects.values())

    def write(self, folder: Path) -> Path:
        path = folder / self.name / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(self.content):
            self.content(path)
        else:
            path.write_bytes(self.content)
        return path


def _directory(path: Path) -> None:
    path.mkdir()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


_ragged_big = "".join(row(i) if i != 1500 else row(i, updated_at="2024-01-01T00:00:00Z,EXTRA") for i in range(2000))

CASES: tuple[Case, ...] = (
    # --- whole-file problems: refused before anything is written ---
    Case("empty", "users", "empty.csv", b"", refused="is empty"),
    Case(
        "duplicate_header",
        "users",
        "dup.csv",
        b"id,email,email,role\nu1,a@x.io,b@x.io,reader\n",
        refused="names 'email' more than once",
    ),
    Case(
        "latin1",
        "users",
        "latin1.csv",
        users_csv(row(1), row(2, email="caf\u00e9@x.io")).replace("é".encode(), b"\xe9"),
        refused="not valid UTF-8 (line 3",
    ),
    Case("utf16", "users", "utf16.csv", users_csv(row(1)).decode().encode("utf-16"), refused="is UTF-16"),
    Case(
        "truncated_gzip",
        "users",
        "cut.csv.gz",
        gzip.compress(users_csv(*(row(i) for i in range(500))))[:-40],
        refused="cannot read",
    ),
    Case(
        "truncated_parquet",
        "users",
        "cut.parquet",
        parquet(pl.DataFrame([user(i) for i in range(100)]))[:300],
        refused="cannot read",
    ),
    Case(
        "truncated_json",
        "users",
        "cut.json",
        b'[{"id": "u1", "email": "a@x.io", "role": "reader"}, {"id": "u2"',
        refused="JSON array",
    ),
    Case("not_a_json_array", "users", "object.json", b'{"id": "u1"}', refused="not a JSON array"),
    Case(
        "gzip_bomb",
        "users",
        "bomb.csv.gz",
        _bomb(4 * MiB),
        refused="larger than the 4194304 byte limit",
        settings={"BULKFLOW_MAX_SOURCE_BYTES": str(4 * MiB)},
    ),
    Case(
        "stray_quote",
        "users",
        "stray.csv",
        users_csv(row(1), row(2, name='Bo"b'), row(3)),
        refused="line 3: a quote inside an unquoted field",
    ),
    Case(
        "unclosed_quote",
        "users",
        "unclosed.csv",
        users_csv(row(1), row(2, name='"Bob'), *(row(i) for i in range(3, 200))),
        refused="line 3: a quoted field opens here and is never closed",
    ),
    Case(
        "header_without_newline",
        "users",
        "oneline.csv",
        b"id," + b"x" * (3 * MiB),
        refused="header (line 1) is over",
        settings=SMALL_RECORDS,
    ),
    Case("directory", "users", "folder.csv", _directory, refused="is a directory"),
    Case("fifo", "users", "pipe.csv", _fifo, refused="not a regular file"),
    Case(
        "parquet_struct",
        "users",
        "struct.parquet",
        parquet(pl.DataFrame({"id": ["u1"], "email": [{"addr": "a@x.io"}], "role": ["reader"]})),
        refused="holds structs",
    ),
    Case("missing_columns", "articles", "users.csv", users_csv(row(1)), refused="lacks required column(s)"),
    # --- readable files: every row loaded or rejected ---
    Case("header_only", "users", "header.csv", users_csv()),
    Case(
        "cr_only", "users", "mac.csv", users_csv(row(1), row(2, name='"Two\rlines"')).replace(b"\n", b"\r"), rows_read=2
    ),
    Case(
        "crlf_lf_mixed", "users", "mixed.csv", users_csv(row(1)).replace(b"\n", b"\r\n") + row(2).encode(), rows_read=2
    ),
    Case("utf8_bom", "users", "bom.csv", b"\xef\xbb\xbf" + users_csv(row(1)), rows_read=1),
    Case("utf8_bom_ndjson", "users", "bom.ndjson", b"\xef\xbb\xbf" + ndjson(user(1)), rows_read=1),
    Case("blank_lines", "users", "blank.csv", users_csv(row(1), "\n", "\r\n", row(2)), rows_read=2),
    Case(
        "ragged_more_fields",
        "users",
        "more.csv",
        users_csv(row(1), row(2, updated_at=",EXTRA"), row(3)),
        rows_read=3,
        rejects={"malformed_record": 1},
    ),
    Case(
        "ragged_fewer_fields",
        "users",
        "fewer.csv",
        users_csv(row(1), "u2,b@x.io\n", row(3)),
        rows_read=3,
        rejects={"malformed_record": 1},
    ),
    Case(
        "ragged_row_after_committed_chunks",
        "users",
        "late.csv",
        users_csv(_ragged_big),
        rows_read=2000,
        rejects={"malformed_record": 1},
        chunk_size=500,
    ),
    Case(
        "huge_field",
        "users",
        "huge.csv",
        users_csv(row(1), row(2, name="x" * (3 * MiB)), row(3)),
        rows_read=3,
        rejects={"record_too_large": 1},
        settings=SMALL_RECORDS,
    ),
    Case(
        "huge_line_ndjson",
        "users",
        "huge.ndjson",
        ndjson(user(1), user(2, name="x" * (3 * MiB)), user(3)),
        rows_read=3,
        rejects={"record_too_large": 1},
        settings=SMALL_RECORDS,
    ),
    Case(
        "huge_json_element",
        "users",
        "huge.json",
        json.dumps([user(1), user(2, name="x" * (3 * MiB)), user(3)]).encode(),
        rows_read=3,
        rejects={"record_too_large": 1},
        settings=SMALL_RECORDS,
    ),
    Case(
        "nul_in_csv",
        "users",
        "nul.csv",
        users_csv(row(1), row(2, name="a\x00b")),
        rows_read=2,
        rejects={"invalid_text": 1},
    ),
    Case(
        "nul_escape_in_ndjson",
        "users",
        "nul.ndjson",
        ndjson(user(1), user(2, name="a\u0000b")),
        rows_read=2,
        rejects={"invalid_text": 1},
    ),
    Case(
        "nul_in_parquet",
        "users",
        "nul.parquet",
        parquet(pl.DataFrame([user(1), user(2, name="a\x00b")])),
        rows_read=2,
        rejects={"invalid_text": 1},
    ),
    Case(
        "overlong_keys",
        "users",
        "long.csv",
        users_csv(row(1), row(2, email="a" * 3000 + "@x.io"), row(3, id="x" * 3000)),
        rows_read=3,
        rejects={"value_too_long": 2},
    ),
    Case(
        "timestamps_out_of_range",
        "users",
        "years.csv",
        users_csv(
            row(1, created_at="300000-01-01T00:00:00Z"),
            row(2, created_at="-0044-03-15T00:00:00Z"),
            row(3, created_at="0000-01-01"),
            row(4, created_at="9999-12-31T23:59:59Z"),
        ),
        rows_read=4,
        rejects={"invalid_timestamp": 3},
    ),
    Case(
        "id_less_rows_sharing_a_key",
        "users",
        "idless.csv",
        users_csv(row(1, id=""), row(2, id="", email="U1@X.io")),
        rows_read=2,
        rejects={"duplicate_email": 1},
    ),
    Case(
        "deep_json_array",
        "users",
        "deep.json",
        (
            "["
            + json.dumps(user(1))
            + ", "
            + _deep(5000)
            + ', {"id": "u3", "email": '
            + _deep(3000)
            + ', "role": "reader"}]'
        ).encode(),
        rows_read=3,
        rejects={"malformed_record": 2},
    ),
    Case(
        "deep_ndjson",
        "users",
        "deep.ndjson",
        ndjson(user(1), _deep(5000), '{"id": "u3", "email": ' + _deep(3000) + ', "role": "reader"}'),
        rows_read=3,
        rejects={"malformed_record": 2},
    ),
    Case(
        "malformed_ndjson_line",
        "users",
        "bad.ndjson",
        ndjson(user(1), '{"id": broken', "[1, 2]", user(4)),
        rows_read=4,
        rejects={"malformed_record": 2},
    ),
    Case(
        "json_array_of_non_objects",
        "users",
        "mixed.json",
        json.dumps([user(1), 5, "x", user(4)]).encode(),
        rows_read=4,
        rejects={"malformed_record": 2},
    ),
    Case(
        "numeric_ids_beyond_2_53",
        "users",
        "bigint.ndjson",
        b'{"id": 12345678901234567890123, "email": "a@x.io", "role": "reader"}\n'
        b'{"id": 12345678901234567890124, "email": "b@x.io", "role": "reader"}\n',
        rows_read=2,
    ),
    Case(
        "object_where_text_expected",
        "users",
        "object.ndjson",
        ndjson(user(1, email={"addr": "o1@example.com"}), user(2, name=["x"]), user(3)),
        rows_read=3,
        rejects={"invalid_type": 2},
    ),
    Case(
        "numbers_and_booleans_for_text",
        "users",
        "scalars.ndjson",
        ndjson(user(1, id=7, name=3.5, active=True), user(2, role=True)),
        rows_read=2,
        rejects={"invalid_type": 1},  # a JSON boolean where a text is due (numbers are read as written)
    ),
    Case(
        "ids_with_spaces_and_case_variants",
        "users",
        "ids.csv",
        users_csv(row(1, id="U1"), row(2, id="u1"), row(3, id=" u1"), row(4, id="u1 ", email="u1@x.io")),
        rows_read=4,
        rejects={"duplicate_email": 1},
    ),
    Case(
        "unicode_emails",
        "users",
        "unicode.csv",
        users_csv(row(1, email="zoë@exämple.com"), row(2, email="用户@例子.广告")),
        rows_read=2,
    ),
    Case("path_with_spaces", "users", "partner file (1).csv", users_csv(row(1)), rows_read=1),
    Case("sql_looking_values", "users", "sql.csv", users_csv(row(1, name="'); DROP TABLE users; --")), rows_read=1),
)


def main(folder: str) -> None:
    for case in CASES:
        print(case.write(Path(folder)))


if __name__ == "__main__":
    main(sys.argv[1])
