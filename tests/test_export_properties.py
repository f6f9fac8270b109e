"""Property-based: whatever the values, what the writers write our readers read back."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bulkflow.settings import Settings
from decisions.decide import check_chunk
from decisions.exports import EXPORT_FORMATS, plan_export
from decisions.keys import SeenKeys
from files.read import read_chunks
from files.staging import stage_source
from files.writers import write_batches
from schemas import RESOURCES
from schemas.columns import LINE
from schemas.resource import RuleContext

ARTICLES = RESOURCES["articles"]
CONTEXT = RuleContext(allowed_roles=("admin",))
# Text as our import stores it: never blank (blank means null), any unicode but NUL.
text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=30).filter(
    lambda s: s.strip() != ""
)
moments = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@st.composite
def article_rows(draw: st.DrawFn) -> pl.DataFrame:
    count = draw(st.integers(min_value=1, max_value=6))
    rows = [
        {
            "id": f"a{i}",
            "slug": f"slug-{i}",
            "title": draw(text),
            "body": draw(st.none() | text),
            "author_id": draw(text),
            "tags": draw(st.none() | st.lists(st.text(max_size=10).filter(lambda s: "\x00" not in s), max_size=4)),
            "published_at": draw(st.none() | moments),
            "status": "published",
        }
        for i in range(count)
    ]
    return pl.DataFrame(rows, schema=ARTICLES.polars_schema())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=article_rows(), format=st.sampled_from(EXPORT_FORMATS))
def test_written_rows_read_back_identical(
    frame: pl.DataFrame, format: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = Path(tmp_path_factory.mktemp("prop")) / f"articles.{format}"
    with open(path, "wb") as sink:
        rows, _, _ = write_batches(plan_export("articles", format, context=CONTEXT), [frame], sink)
    assert rows == frame.height
    staged = stage_source(str(path), settings=Settings())
    [batch] = list(read_chunks(staged, ARTICLES, 1000))
    staged.cleanup()
    checked = check_chunk(ARTICLES, CONTEXT, 0, batch.rows, SeenKeys())
    assert checked.rejects.height == 0, checked.rejects.to_dicts()
    assert checked.rows.drop(LINE).equals(frame)


def test_read_ahead_hands_over_every_batch_in_order_and_the_error_that_ends_them() -> None:
    from tasks.export import read_ahead

    with read_ahead(iter(range(10))) as batches:
        assert list(batches) == list(range(10))

    def failing() -> Iterator[int]:
        yield 1
        raise ConnectionError("connection lost mid-export")

    with read_ahead(failing()) as batches:
        assert next(batches) == 1
        with pytest.raises(ConnectionError, match="mid-export"):
            next(batches)


def test_a_writer_that_stops_early_stops_the_fetching_thread() -> None:
    from tasks.export import read_ahead

    fetched = []

    def endless() -> Iterator[int]:
        for n in itertools.count():
            fetched.append(n)
            yield n

    with read_ahead(endless()) as batches:
        assert next(batches) == 0
    assert not [t for t in threading.enumerate() if t.name == "export-fetch"]
    assert len(fetched) <= 5  # the one handed over, the ones queued ahead, and one in hand
