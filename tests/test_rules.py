"""Every validation rule, passing and failing, on the pure transforms (no database)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decisions.decide import check_chunk
from decisions.keys import SeenKeys
from decisions.parsers import parse_boolean, parse_text_list, parse_timestamp
from schemas import RESOURCES
from schemas.columns import LINE, RAW_RECORD, READ_MESSAGE, READ_RULE
from schemas.resource import RuleContext

CONTEXT = RuleContext(allowed_roles=("admin", "author", "editor", "reader"))

VALID: dict[str, dict[str, str | None]] = {
    "users": {
        "id": "u1",
        "email": "ann@example.com",
        "name": "Ann",
        "role": "reader",
        "active": "true",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": None,
    },
    "articles": {
        "id": "a1",
        "slug": "hello-world",
        "title": "Hello",
        "body": "text",
        "author_id": "u1",
        "tags": '["x","y"]',
        "published_at": "2024-01-02T00:00:00Z",
        "status": "published",
    },
    "comments": {"id": "c1", "article_id": "a1", "user_id": "u1", "body": "nice", "created_at": None},
}


def check(resource: str, **overrides: str | None) -> list[tuple[str, str]]:
    """(field, rule) of every reject for one record = the valid record with overrides."""
    record = {**VALID[resource], **overrides}
    chunk = pl.DataFrame([{LINE: 2, **record}], schema={LINE: pl.Int64, **{k: pl.String for k in record}})
    checked = check_chunk(RESOURCES[resource], CONTEXT, 0, chunk, SeenKeys())
    rejected = sorted(zip(checked.rejects["field"], checked.rejects["rule"]))
    assert checked.rows.height + (1 if rejected else 0) == 1
    return rejected


@pytest.mark.parametrize("resource", list(VALID))
def test_valid_record_passes(resource: str) -> None:
    assert check(resource) == []


@pytest.mark.parametrize(
    ("resource", "overrides", "expected"),
    [
        ("users", {"email": "foo@bar"}, [("email", "invalid_email")]),
        ("users", {"email": "a b@example.com"}, [("email", "invalid_email")]),
        ("users", {"email": None}, [("email", "required")]),
        ("users", {"email": "  "}, [("email", "required")]),
        ("users", {"role": "manager"}, [("role", "invalid_role")]),
        ("users", {"role": None}, [("role", "required")]),
        ("users", {"active": "yes"}, [("active", "invalid_boolean")]),
        ("users", {"active": "1"}, [("active", "invalid_boolean")]),
        ("users", {"created_at": "yesterday"}, [("created_at", "invalid_timestamp")]),
        ("users", {"updated_at": "2024-13-01"}, [("updated_at", "invalid_timestamp")]),
        ("users", {"id": None, "email": None}, [("email", "required"), ("id", "missing_id")]),
        (
            "users",
            {"email": "x@y", "role": "boss", "active": "nope"},
            [("active", "invalid_boolean"), ("email", "invalid_email"), ("role", "invalid_role")],
        ),
        ("articles", {"slug": "Bad Slug"}, [("slug", "invalid_slug")]),
        ("articles", {"slug": "double--hyphen"}, [("slug", "invalid_slug")]),
        ("articles", {"slug": "-leading"}, [("slug", "invalid_slug")]),
        ("articles", {"status": "pending"}, [("status", "invalid_status")]),
        ("articles", {"status": "draft"}, [("published_at", "draft_has_published_at")]),
        ("articles", {"tags": "a,b"}, [("tags", "invalid_tags")]),
        ("articles", {"tags": "[1, 2]"}, [("tags", "invalid_tags")]),
        ("articles", {"title": None}, [("title", "required")]),
        ("articles", {"author_id": ""}, [("author_id", "required")]),
        ("articles", {"id": None, "slug": None}, [("id", "missing_id"), ("slug", "required")]),
        ("comments", {"body": "   "}, [("body", "required")]),
        ("comments", {"body": " ".join(["w"] * 501)}, [("body", "body_too_long")]),
        ("comments", {"id": None}, [("id", "missing_id")]),
        ("comments", {"article_id": None, "user_id": None}, [("article_id", "required"), ("user_id", "required")]),
    ],
)
def test_failing_rules_are_all_reported(resource: str, overrides: dict, expected: list) -> None:
    assert check(resource, **overrides) == expected


@pytest.mark.parametrize(
    ("resource", "overrides"),
    [
        ("users", {"id": None}),  # id derived from the email on load
        ("users", {"active": "FALSE", "created_at": "2024-01-01 10:00:00+02:00"}),
        ("users", {"active": None, "role": "admin"}),
        ("articles", {"status": "draft", "published_at": None}),
        ("articles", {"id": None}),
        ("articles", {"tags": "[]"}),
        ("articles", {"tags": None}),
        ("comments", {"body": " ".join(["w"] * 500)}),
    ],
)
def test_edge_values_pass(resource: str, overrides: dict) -> None:
    assert check(resource, **overrides) == []


def test_allowed_roles_are_configurable() -> None:
    chunk = pl.DataFrame({LINE: [2], "id": ["u1"], "email": ["a@b.co"], "role": ["manager"]})
    custom = RuleContext(allowed_roles=("manager",))
    assert check_chunk(RESOURCES["users"], custom, 0, chunk, SeenKeys()).rejects.height == 0


def test_duplicates_first_valid_occurrence_wins_across_chunks() -> None:
    users = RESOURCES["users"]
    seen = SeenKeys()
    first = pl.DataFrame(
        {
            LINE: [2, 3, 4],
            "id": ["u1", "u2", "u3"],
            "email": ["bad", "Ann@Example.com", "bob@example.com"],
            "role": ["reader"] * 3,
        }
    )
    second = pl.DataFrame(
        {
            LINE: [5, 6, 7],
            "id": ["u9", "u2", "u4"],
            "email": ["ann@example.COM", "zed@example.com", "bad@example.com"],
            "role": ["reader"] * 3,
        }
    )
    one = check_chunk(users, CONTEXT, 0, first, seen)
    two = check_chunk(users, CONTEXT, 1, second, seen)
    assert one.rows["id"].to_list() == ["u2", "u3"]
    assert sorted(zip(two.rejects["line"], two.rejects["rule"])) == [(5, "duplicate_email"), (6, "duplicate_id")]
    assert two.rows["id"].to_list() == ["u4"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.one_of(st.none(), st.sampled_from([f"k{i}" for i in range(40)])), max_size=12), max_size=30)
)
def test_seen_keys_answer_as_a_set_of_every_key_added_before(chunks: list[list[str | None]]) -> None:
    """Whatever the chunk sizes and however the runs merged, a lookup says exactly whether
    the key was added by an earlier chunk."""
    seen, added = SeenKeys(), set[str]()
    for chunk in chunks:
        values = pl.Series("id", chunk, dtype=pl.String)
        assert seen.seen_before("id", values).to_list() == [v is not None and v in added for v in chunk]
        seen.add("id", values)
        added.update(v for v in chunk if v is not None)
    for runs in seen.runs.get("id", []):  # each part's runs stay logarithmic in its keys
        assert len(runs) <= max(1, sum(len(run) for run in runs)).bit_length()


def test_invalid_first_occurrence_does_not_block_a_later_valid_one() -> None:
    chunk = pl.DataFrame(
        {LINE: [2, 3], "id": ["u1", "u1"], "email": ["nope", "ok@example.com"], "role": ["reader"] * 2}
    )
    checked = check_chunk(RESOURCES["users"], CONTEXT, 0, chunk, SeenKeys())
    assert checked.rows[LINE].to_list() == [3]
    assert checked.rejects["rule"].to_list() == ["invalid_email"]


def test_reject_carries_line_value_message_and_raw_record() -> None:
    chunk = pl.DataFrame({LINE: [7], "id": ["u1"], "email": ["foo@bar"], "role": ["reader"]})
    reject = check_chunk(RESOURCES["users"], CONTEXT, 0, chunk, SeenKeys()).rejects.row(0, named=True)
    assert reject["line"] == 7 and reject["value"] == "foo@bar" and "name@example.com" in reject["message"]
    assert '"email":"foo@bar"' in reject["raw"]


def test_malformed_ndjson_line_is_one_reject() -> None:
    chunk = pl.DataFrame(
        {
            LINE: [3],
            "id": [None],
            "email": [None],
            "role": [None],
            RAW_RECORD: ['{"id": broken'],
            READ_RULE: ["malformed_record"],
            READ_MESSAGE: ["the line is not a JSON object"],
        },
        schema_overrides={"id": pl.String, "email": pl.String, "role": pl.String},
    )
    checked = check_chunk(RESOURCES["users"], CONTEXT, 0, chunk, SeenKeys())
    assert checked.rejects.select("line", "rule", "raw").rows() == [(3, "malformed_record", '{"id": broken')]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), (" False ", False), ("TRUE", True), ("yes", None), ("0", None)],
)
def test_parse_boolean(text: str, expected: bool | None) -> None:
    assert pl.select(parse_boolean(pl.lit(text))).item() == expected


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12:00:00.250+02:00", "2024-05-01T10:00:00.250000+00:00"),
        ("2024-05-01 12:00:00", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01", "2024-05-01T00:00:00+00:00"),
        ("2024-02-30", None),
        ("05/01/2024", None),
    ],
)
def test_parse_timestamp(text: str, iso: str | None) -> None:
    parsed = pl.select(parse_timestamp(pl.lit(text))).item()
    assert (parsed.isoformat() if parsed else None) == iso


@pytest.mark.parametrize(
    ("text", "expected"),
    [('["a", "b,c"]', ["a", "b,c"]), ("[]", []), ('["q\\"x"]', ['q"x']), ("a|b", None), ('{"a":1}', None)],
)
def test_parse_text_list(text: str, expected: list | None) -> None:
    parsed = pl.select(parse_text_list(pl.lit(text))).item()
    assert (parsed.to_list() if parsed is not None else None) == expected


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.one_of(st.none(), st.sampled_from([f"k{i}" for i in range(60)])), max_size=12), max_size=30),
    st.integers(min_value=1, max_value=8),
)
def test_seen_keys_spilled_to_disk_answer_as_the_keys_kept_in_memory(
    chunks: list[list[str | None]], budget: int
) -> None:
    """Past its memory budget a key's hashes go to runs on disk: lookups stay exact (the
    Bloom filters have no false negatives, their false positives are checked on disk), and
    the runs' directory goes with the SeenKeys."""
    with tempfile.TemporaryDirectory() as spill_dir:
        seen, added, total = SeenKeys(spill_dir=Path(spill_dir), memory_budget=budget), set[str](), 0
        for chunk in chunks:
            values = pl.Series("id", chunk, dtype=pl.String)
            assert seen.seen_before("id", values).to_list() == [v is not None and v in added for v in chunk]
            seen.add("id", values)
            added.update(v for v in chunk if v is not None)
            total += sum(v is not None for v in chunk)
        assert bool(seen.spilled.get("id")) == (total > budget)
        del seen
        assert list(Path(spill_dir).iterdir()) == []


def test_seen_keys_spill_holds_a_large_key_set_exactly_and_cleans_up_after_killed_runs(tmp_path: Path) -> None:
    orphan = tmp_path / "keys-999999999-dead"  # a run directory of a process that is gone
    orphan.mkdir()
    seen = SeenKeys(spill_dir=tmp_path, memory_budget=10_000)
    for start in range(0, 50_000, 5_000):
        seen.add("email", pl.Series("email", [f"user{i}@example.com" for i in range(start, start + 5_000)]))
    assert not orphan.exists() and len(seen.spilled["email"]) == 3  # spilled at 15k, 30k, 45k keys
    probe = pl.Series("email", [f"user{i}@example.com" for i in range(45_000, 55_000)])
    assert seen.seen_before("email", probe).to_list() == [i < 50_000 for i in range(45_000, 55_000)]
