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
