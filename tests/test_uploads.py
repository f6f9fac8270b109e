"""Stored uploads, without a server: which locations count as uploads, and removing one
whose import failed never raises in place of that failure."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bulkflow.settings import Settings
from tasks.landing import discard_upload, is_upload


def test_a_failed_upload_is_removed_and_a_removal_that_fails_raises_nothing(
    tmp_path: Path, settings_env: Callable[..., None]
) -> None:
    settings_env(BULKFLOW_LANDING_URL=str(tmp_path))
    settings = Settings()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    stored = uploads / "abc.csv"
    stored.write_text("id\n1\n")
    discard_upload(settings, str(stored))
    assert not stored.exists()
    unremovable = uploads / "def.csv"
    (unremovable / "inside").mkdir(parents=True)  # a folder: rm without recursive refuses it
    discard_upload(settings, str(unremovable))  # logged, not raised: the import's own error stays the run's
    assert unremovable.exists()
    elsewhere = tmp_path / "users" / "partner.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text("id\n1\n")
    assert not is_upload(settings, str(elsewhere)) and not is_upload(settings, "https://example.com/uploads/x.csv")
    discard_upload(settings, str(elsewhere))
    assert elsewhere.exists()  # a landed file or a URL is never removed


def test_the_expanded_size_of_a_multi_member_gzip_counts_every_member() -> None:
    """Members are read one after the other (zero padding between them too), in blocks:
    the stream passes through unchanged, and the limit holds over all of them."""
    import gzip
    import io

    import pytest

    from bulkflow.errors import InputError, TooLargeError
    from files.copying import ExpandedSizeLimit

    members = gzip.compress(b"a" * 3_000_000) + b"\0" * 8 + gzip.compress(b"b" * 2_000_000)
    counted = ExpandedSizeLimit(io.BytesIO(members), "u.csv.gz", 10**8)
    assert io.BufferedReader(counted).read() == members
    assert counted.expanded == 5_000_000
    with pytest.raises(TooLargeError):  # the second member passes the limit
        io.BufferedReader(ExpandedSizeLimit(io.BytesIO(members), "u.csv.gz", 4_000_000)).read()
    with pytest.raises(InputError, match="not valid gzip"):
        io.BufferedReader(ExpandedSizeLimit(io.BytesIO(gzip.compress(b"x") + b"junk"), "u.csv.gz", 10**8)).read()
