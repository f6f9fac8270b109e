"""What imports and exports report: one typed model per concept, used end to end.

The chunk ledger's counts, a job's totals, the import report (the flow's result, the CLI's
`--json`, the Prefect artifact, the API's job status) and the export manifest (the file
beside the export, the `export_jobs` row, the API) are all built from these models, so a
counter is declared once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class ImportCounts(BaseModel):
    """Rows read, and what became of them: inserted + updated + unchanged + rejected = rows_read."""

    model_config = ConfigDict(frozen=True)

    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = Field(
        default=0, description="rows whose stored values already equal the file's: accepted, and not written"
    )
    rejected: int = Field(default=0, description="rows rejected (a row failing three rules counts once)")

    @property
    def accounted(self) -> int:
        """Every row read that became something: inserted, updated, unchanged or rejected."""
        return self.inserted + self.updated + self.unchanged + self.rejected

    @property
    def invariant_holds(self) -> bool:
        return self.accounted == self.rows_read

    def rejected_share(self) -> float:
        """rejected / rows_read (0 for no rows), to six decimals: the reports' error_rate."""
        return round(self.rejected / self.rows_read, 6) if self.rows_read else 0.0


COUNTS: tuple[str, ...] = tuple(ImportCounts.model_fields)
"""The counters of `ImportCounts`; the chunk ledger (`import_chunks`) names its columns after them."""


class Written(BaseModel):
    """What writing a chunk's accepted rows did to the table."""

    model_config = ConfigDict(frozen=True)

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: Written) -> Written:
        return Written(
            inserted=self.inserted + other.inserted,
            updated=self.updated + other.updated,
            unchanged=self.unchanged + other.unchanged,
        )


class ChunkResult(ImportCounts):
    """One chunk's counts, as its ledger row holds them."""

    index: int
    skipped: bool = Field(description="the ledger already held this chunk (an earlier run committed it)")


class JobTotals(ImportCounts):
    """A job's counts over all its runs: the sum of its committed chunks."""

    chunks: int = 0
    rejects_by_rule: dict[str, int] = Field(
        default_factory=dict, description="reject entries per rule id (a row failing three rules counts three times)"
    )


class HeaderMatch(BaseModel):
    """A column of the file read as a field of another name: by the map, or loosely (its
    name differs from the field's only by case, blanks, '-', '_' or a byte order mark)."""

    model_config = ConfigDict(frozen=True)

    column: str
    field: str
    by: Literal["map", "loose"]


class ColumnDrift(BaseModel):
    """How the file's columns differ from those of the previous import of the same profile
    (or resource, without one)."""

    model_config = ConfigDict(frozen=True)

    added: list[str] = Field(default_factory=list, description="columns the previous import's file did not have")
    missing: list[str] = Field(default_factory=list, description="columns the previous import's file had")
    previous_job: str = Field(description="the job key of that previous import")

    @classmethod
    def between(cls, previous_job: str, previous: list[str], current: list[str]) -> ColumnDrift | None:
        """The drift from `previous` to `current` columns; None when they are the same set."""
        added = [c for c in current if c not in previous]
        missing = [c for c in previous if c not in current]
        return cls(added=added, missing=missing, previous_job=previous_job) if added or missing else None

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append(f"adds {', '.join(self.added)}")
        if self.missing:
            parts.append(f"lacks {', '.join(self.missing)}")
        return " and ".join(parts) + " against the previous import"


class FileReading(BaseModel):
    """How the file was read: what was asked for, and what bulkflow decided by itself."""

    model_config = ConfigDict(frozen=True)

    profile: Optional[str] = Field(default=None, description="the partner profile the options came from")
    encoding: str = Field(default="utf-8", description="the text encoding the file was decoded from")
    delimiter: Optional[str] = Field(default=None, description="a CSV file's delimiter")
    delimiter_from: Optional[str] = Field(
        default=None, description="where the delimiter came from: default, given, sep line (Excel's) or sniffed"
    )
    quote: Optional[str] = None
    escape: Optional[str] = Field(default=None, description="a CSV file's escape character, if not the doubled quote")
    columns: list[str] = Field(default_factory=list, description="the file's columns, as read (after the matches)")
    header_matches: list[HeaderMatch] = Field(default_factory=list)
    ignored_columns: list[str] = Field(default_factory=list, description="columns no field takes, not read")
    drift: Optional[ColumnDrift] = None

    def notes(self) -> list[tuple[str, str]]:
        """What a reader of the report should know about how the file was read, as
        (label, text): nothing for a plain UTF-8 file read as is."""
        notes = [("profile", self.profile)] if self.profile else []
        if self.delimiter is not None and self.delimiter_from != "default":
            shown = {"\t": "tab", " ": "space"}.get(self.delimiter, repr(self.delimiter))
            notes.append(("delimiter", f"{shown} ({self.delimiter_from})"))
        if self.encoding != "utf-8":
            notes.append(("encoding", self.encoding))
        notes += [("header", f"{m.column!r} read as {m.field} ({m.by})") for m in self.header_matches]
        if self.ignored_columns:
            notes.append(("ignored columns", ", ".join(self.ignored_columns)))
        if self.drift is not None:
            notes.append(("column drift", f"the file {self.drift.describe()} ({self.drift.previous_job})"))
        return notes


class ImportReport(ImportCounts):
    """The result of an import run: what *this run* did, and the job's totals apart.

    `inserted`, `updated`, `unchanged` and `rejected` are the rows of the chunks this run
    committed; the rows of chunks an earlier run had committed (a re-import, a resumed job)
    are `already_committed`, so `inserted + updated + unchanged + rejected +
    already_committed = rows_read` still holds for the run. `job` holds the totals over all the job's runs."""

    job_key: str
    resource: str
    source: str
    source_name: str = Field(description="the file's name as its sender knows it")
    flow_run_id: Optional[str]
    status: str
    mode: str = Field(default="upsert", description="how the rows were written: upsert, insert or update")
    dry_run: bool = Field(
        default=False, description="a prediction: the counts say what the import would do, and nothing was written"
    )
    atomic: bool = Field(default=False, description="all or nothing: the rows became visible in one transaction")
    deleted: int = Field(default=0, description="rows of the table not in the file, deleted by --mode replace")
    deleted_dependents: dict[str, int] = Field(
        default_factory=dict, description="rows of other tables that referenced deleted rows (--cascade), per table"
    )
    budget_exceeded: Optional[str] = Field(
        default=None, description="why the error budget was spent, and why the run went on (continue, approved)"
    )
    already_committed: int = Field(
        default=0, description="rows of chunks earlier runs had committed: read again, not written again"
    )
    already_committed_by: list[str] = Field(
        default_factory=list, description="the flow runs that committed those chunks"
    )
    rejects_by_rule: dict[str, int] = Field(default_factory=dict, description="this run's reject entries per rule id")
    chunks: int = Field(default=0, description="chunks of the file")
    chunks_skipped: int = Field(default=0, description="chunks earlier runs had committed")
    continues_runs: list[str] = Field(
        default_factory=list, description="earlier runs of a job they left unfinished, that this run finishes"
    )
    duration_s: float = 0.0
    rows_per_s: float = 0.0
    error_rate: float = Field(
        default=0.0, description="this run's rejected / rows it read (already committed ones excluded)"
    )
    job: JobTotals = Field(default_factory=JobTotals, description="the job's totals over all its runs")
    reading: FileReading = Field(default_factory=FileReading, description="how the file was read")

    @property
    def rejects_handle(self) -> str:
        """What `bulkflow rejects` takes for this run's rejects: the job key, or for a dry
        run (a job of its own, under a long key) the run id."""
        return self.flow_run_id if self.dry_run and self.flow_run_id else self.job_key

    @property
    def invariant_holds(self) -> bool:
        own = self.accounted + self.already_committed == self.rows_read
        return own and self.job.invariant_holds


class ExportFile(BaseModel):
    """One file an export wrote, as its manifest lists it."""

    model_config = ConfigDict(frozen=True)

    location: str
    rows: int
    bytes: int
    sha256: str


class ExportManifest(BaseModel):
    """Written beside every async export (and every partitioned one) as
    `<location>.manifest.json`, and returned by the API."""

    model_config = ConfigDict(frozen=True)

    job_id: Optional[str] = Field(
        default=None, description="the export job's flow run id; none for an export the CLI wrote"
    )
    resource: str
    format: str
    filters: dict[str, str] = Field(default_factory=dict)
    fields: list[str] = Field(default_factory=list)
    limit: Optional[int] = Field(default=None, description="the most rows asked for (the first ones by id); none: all")
    rows: int
    bytes: int
    sha256: str = Field(
        description="of the file; of a partitioned dataset, of its listing as sha256sum prints it "
        "(`<sha256>  <path in the dataset>` per file, by path)"
    )
    duration_s: float
    rows_per_s: float = 0.0
    connections: int = Field(default=1, description="connections the rows were read over, id ranges of one snapshot")
    location: str = Field(description="the file, or a partitioned dataset's directory")
    partition_by: Optional[str] = Field(
        default=None, description="what a partitioned dataset is partitioned by (`created_at:day`, `role`)"
    )
    files: list[ExportFile] = Field(
        default_factory=list,
        description="a partitioned dataset's files (`<location>/<key>=<value>/part-NNNN.parquet`), by path",
    )
    since: Optional[str] = Field(default=None, description="the cursor an incremental export started from; none: full")
    cursor: Optional[str] = Field(
        default=None,
        description="the cursor to start the next incremental export from (none when a limit cut the rows)",
    )
    deleted: int = Field(default=0, description="rows deleted since `since` (tombstones, or the rows of `deletes`)")
    deletes: Optional[ExportFile] = Field(
        default=None, description="the deletes file of an incremental CSV or Parquet export (id, _deleted_at)"
    )
    cursor_name: Optional[str] = Field(
        default=None, description="the name its cursor is kept under in the database (the nightly deployment's)"
    )


HistoryStatus = Literal["completed", "completed_with_rejects", "failed", "aborted", "dry_run", "running"]
"""How a load ended: `aborted` when its budget or a refused replace gave it up with nothing
applied; `running` only for an export still being written."""


class ImportHistoryEntry(BaseModel):
    """One import run in the load history (`bulkflow history`, GET /v1/imports): the field
    names of its `--json` report, kept in bulkflow's own tables (Prefect's run history may
    be pruned)."""

    model_config = ConfigDict(frozen=True)

    flow_run_id: str
    resource: str
    source_name: str = Field(description="the file's name as its sender knows it")
    sha256: Optional[str] = Field(default=None, description="the file's checksum, when it was read")
    profile: Optional[str] = None
    status: HistoryStatus
    job_key: Optional[str] = None
    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    deleted: int = 0
    first_error: Optional[str] = Field(default=None, description="why it failed, or its first reject")
    started_at: datetime
    finished_at: datetime
    duration_s: float
    via: str = Field(description="how it was started: cli, api, landing, schedule, deployment or python")


class ExportHistoryEntry(BaseModel):
    """One export job in the load history (`bulkflow history --exports`, GET /v1/exports/history)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    resource: str
    format: str
    status: HistoryStatus
    rows: Optional[int] = None
    deleted: int = 0
    bytes: Optional[int] = None
    incremental: bool = Field(description="whether it held only the changes since a cursor")
    cursor_name: Optional[str] = None
    location: str
    first_error: Optional[str] = None
    started_at: datetime
    finished_at: Optional[datetime] = None
    duration_s: Optional[float] = None
    via: Optional[str] = None
