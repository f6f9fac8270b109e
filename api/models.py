"""Request and response bodies of the /v1 API (flow parameters come from `schemas.parameters`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Optional

from pydantic import AliasChoices, BaseModel, Field, model_validator

from decisions.exports import ExportFormat
from decisions.partitions import PARTITION_BY_HELP
from schemas.parameters import ExportFilters, FileOptions, OptionalFormat, ResourceName
from schemas.reports import ExportManifest, ImportCounts, JobTotals

JobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
ALIASES: dict[str, tuple[str, ...]] = {"resource": ("resource_type",), "url": ("file_url",)}
"""Other names clients of the same API send for a field (the seed assignment's Postman
collection sends `resource_type` and `file_url`): accepted everywhere the field is."""


def aliased(name: str, **field: Any) -> Any:
    """A model field called `name` that also accepts its aliases, and documents them."""
    others = ALIASES[name]
    description = field.pop("description", "")
    also = ", ".join(f"`{alias}`" for alias in others)
    return Field(
        validation_alias=AliasChoices(name, *others),
        description=f"{description} Also accepted as {also}.".strip(),
        json_schema_extra={"x-aliases": list(others)},
        **field,
    )


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class Accepted(BaseModel):
    job_id: str = Field(description="The Prefect flow run id of the job.")
    status: JobStatus
    status_url: str


class ImportFromUrl(FileOptions):
    """An import of a URL (or of the records an import rejected), with how it is read and
    written (`FileOptions`: the same fields a form sends, and a profile holds)."""

    resource: ResourceName = aliased("resource", description="users, articles or comments.")
    url: Optional[str] = aliased(
        "url",
        default=None,
        description="http(s) URL (s3:// when BULKFLOW_URL_SCHEMES allows it).",
        examples=["https://partner.example.com/users.csv.gz"],
    )
    format: OptionalFormat = Field(default=None, description="Default: from the URL's file name.")
    rejects_of: Optional[str] = Field(
        default=None,
        min_length=1,
        description="Instead of a url: import again the records this import (its job id or job key) rejected.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ImportFromUrl:
        if (self.url is None) == (self.rejects_of is None):
            raise ValueError("give a url or rejects_of (one of them)")
        return self


class ImportJob(ImportCounts):
    """An import job's status: what this run did (running counts while it runs), apart from
    the chunks earlier runs of the same content had committed, and the job's totals."""

    job_id: str
    status: JobStatus
    resource: Optional[str] = None
    source: Optional[str] = None
    source_name: Optional[str] = Field(default=None, description="The file's name as its sender knows it.")
    mode: str = Field(default="upsert", description="How the rows are written: upsert, insert or update.")
    dry_run: bool = Field(default=False, description="A prediction: nothing is written.")
    deleted: int = Field(default=0, description="Rows of the table not in the file, deleted by --mode replace.")
    deleted_dependents: dict[str, int] = Field(
        default_factory=dict, description="Rows of other tables referencing deleted rows (--cascade), per table."
    )
    budget_exceeded: Optional[str] = Field(
        default=None, description="Why the error budget was spent, and why the run went on (continued, approved)."
    )
    already_committed: int = Field(
        default=0, description="Rows of chunks earlier runs had committed: not written again."
    )
    already_committed_by: list[str] = Field(default_factory=list, description="The runs that committed those chunks.")
    rejects_by_rule: dict[str, int] = Field(default_factory=dict, description="This run's reject entries per rule id.")
    chunks_committed: int = Field(default=0, description="Chunks this run committed.")
    job: JobTotals = Field(default_factory=JobTotals, description="The job's totals over all its runs.")
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    duration_s: Optional[float] = None
    rows_per_s: Optional[float] = None
    error: Optional[str] = Field(default=None, description="Why the job failed.")
    retryable: Optional[bool] = Field(
        default=None,
        description="For a failed job: whether trying again may succeed (the database or a store was away).",
    )
    rejects_sample: list[dict[str, Any]] = Field(default_factory=list)
    rejects_url: str


class ExportJobRequest(BaseModel):
    resource: ResourceName = aliased("resource", description="users, articles or comments.")
    format: ExportFormat = "csv"
    filters: Optional[ExportFilters] = Field(default=None, examples=[{"role": "admin"}])  # type: ignore[valid-type]  # a model declared at run time
    fields: Optional[list[str]] = Field(default=None, examples=[["id", "email"]])
    limit: Optional[int] = Field(default=None, description="the most rows to write (the first ones by id)")
    since: Optional[str] = Field(
        default=None, description="a cursor (an earlier export's manifest `cursor`): only what changed since"
    )
    partition_by: Optional[str] = Field(default=None, description=PARTITION_BY_HELP, examples=["created_at:day"])


class ExportJob(BaseModel):
    job_id: str
    status: JobStatus
    manifest: Optional[ExportManifest] = None
    download_url: Optional[str] = Field(
        default=None, description="the file, once completed (none for a partitioned dataset: `file_urls`)"
    )
    file_urls: list[str] = Field(
        default_factory=list, description="a partitioned dataset's files, in the manifest's order"
    )
    deletes_url: Optional[str] = Field(default=None, description="an incremental CSV or Parquet export's deletes file")
    error: Optional[str] = None
