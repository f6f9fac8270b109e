"""What a benchmark run is given (`BenchConfig`) and what it measures (`Comparison`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class BenchConfig:
    rows: int = 1_000_000
    """Rows of users, articles and comments each."""
    invalid_share: float = 0.05
    repeats: int = 3
    memory_rows: tuple[int, ...] = (10_000, 100_000, 1_000_000, 10_000_000)
    landing_files: int = 40
    """Files of 1,000 users dropped into the landing folder at once."""
    uploads_at_once: tuple[int, ...] = (20, 200)
    """Uploads of 1,000-row files sent to the API at once: answered within 2 s (20), all accepted (200)."""
    workdir: Path = Path(".bulkflow-bench")
    results: Path = Path("bench/results")
    prefect_api_url: str | None = None
    prefect_database_url: str | None = None
    """The database of the benchmark's own Prefect server (SQLAlchemy URL); None: SQLite,
    Prefect's default. On SQLite, writes that meet answer 503 "database is locked" and the
    client waits 2 s before it tries again; Prefect runs on PostgreSQL in production."""


@dataclass
class Comparison:
    """One workload measured `repeats` times on each side."""

    kind: str
    workload: str
    rows: int
    target: float | None
    reference: str = "COPY"
    """What our side is measured against (`copy_s` holds its times)."""
    copy_s: list[float] = field(default_factory=list)
    ours_s: list[float] = field(default_factory=list)
    ours_peak_rss_mb: list[float] = field(default_factory=list)
    ours_in_flow_s: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Our throughput over the reference's (medians): 1.0 = as fast as COPY."""
        return statistics.median(self.copy_s) / statistics.median(self.ours_s)
