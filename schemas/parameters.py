"""Flow parameters as pydantic models: the Prefect UI renders them as forms, the API and
Prefect's `create_flow_run` validate against the same definitions."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from bulkflow.errors import ParameterError
from schemas import RESOURCES

ResourceName = Literal["users", "articles", "comments"]
Format = Literal["csv", "ndjson", "json", "parquet"]
FORMATS: tuple[str, ...] = get_args(Format)
WriteMode = Literal["upsert", "insert", "update", "replace"]
"""What an import may do to the rows it finds (or does not find) in the table."""
WRITE_MODES: tuple[str, ...] = get_args(WriteMode)
PRESENCE_MODES: tuple[WriteMode, ...] = ("insert", "update")
"""The write modes that refuse a row by whether the table holds it (the others upsert)."""
OnBudget = Literal["abort", "pause", "continue"]
"""What an import does once its error budget is spent."""
OptionalFormat = Annotated[Optional[Format], WithJsonSchema({"enum": [*FORMATS, None]})]
"""A format, or none to tell it from the file's name. Its schema is one list of the formats
(not "a format or null"), so forms show a choice left empty by default: the Prefect UI's run
form, Swagger UI's upload form, the API's JSON body."""


def check_format(name: str) -> Format:
    """`name` as one of the formats we read and write; ParameterError naming them otherwise."""
    if name not in FORMATS:
        raise ParameterError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}")
    return name  # type: ignore[return-value]  # checked to be one of FORMATS just above


class LoadControl(BaseModel):
    """How an import writes: the options a caller of the API sets along with the file
    (`ImportOptions` adds how a run names its job)."""

    model_config = ConfigDict(extra="forbid")

    chunk_size: Optional[int] = Field(
        default=None, ge=1, description="Rows per chunk (one transaction each); default BULKFLOW_CHUNK_SIZE."
    )
    mode: WriteMode = Field(
        default="upsert",
        description="upsert: insert new rows, update the others; insert: only add new rows (a row already in "
        "the table is rejected already_exists); update: only change existing rows (a row not in the table is "
        "rejected not_found); replace: afterwards the table holds exactly the file's accepted rows (the others "
        "are deleted, all or nothing).",
    )
    cascade: bool = Field(
        default=False,
        description="With --mode replace: also delete the rows of other tables that reference deleted rows "
        "(without it, such a replace is refused).",
    )
    dry_run: bool = Field(
        default=False,
        description="Run every check against the live tables and predict inserted, updated, unchanged and "
        "rejected, with the reject report, writing nothing to the tables and committing no chunk of the job.",
    )
    atomic: bool = Field(
        default=False,
        description="All or nothing: the accepted rows are staged, then become visible in one transaction "
        "at the end (a kill or a failure before it leaves the table as it was).",
    )
    max_rejects: Optional[int] = Field(default=None, ge=0, description="Error budget: the most rows rejected.")
    max_reject_rate: Optional[float] = Field(
        default=None, ge=0, le=1, description="Error budget: the largest share of rows rejected (0.02 = 2%)."
    )
    budget_min_rows: int = Field(default=1000, ge=0, description="Rows read before the reject rate is judged.")
    on_budget: OnBudget = Field(
        default="abort",
        description="Once the budget is spent: abort (nothing of the file stays in the tables), pause (an "
        "operator approves or aborts from the Prefect UI or API), or continue (the run is flagged).",
    )
    budget_pause_timeout: int = Field(
        default=3600, ge=1, description="Seconds a paused import waits for an answer before it aborts."
    )

    @property
    def has_budget(self) -> bool:
        return self.max_rejects is not None or self.max_reject_rate is not None

    @property
    def all_or_nothing(self) -> bool:
        """Atomic, asked for or implied: a replace deletes in the same transaction, and a
        budget that may abort must leave nothing behind."""
        return self.atomic or self.mode == "replace" or (self.has_budget and self.on_budget != "continue")


class ImportOptions(LoadControl):
    """How an import is cut, identified and controlled."""

    idempotency_key: Optional[str] = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Names the job: a re-run with the same key resumes it. Default: resource + content sha256.",
    )
    source_name: Optional[str] = Field(
        default=None,
        min_length=1,
        max_length=300,
        description="The file's name as its sender knows it (an API upload's original name), for run names "
        "and reports. Default: the last part of the source's path or URL.",
    )
    rejects_of: Optional[str] = Field(
        default=None,
        min_length=1,
        description="Import again the records an earlier import (its flow run id or job key) rejected, as a "
        "new job, instead of a source (leave the source empty).",
    )

    @property
    def given_name(self) -> str | None:
        """The file's name, given or (a replay) made up; None: the source's last part."""
        return self.source_name or (f"rejects-of-{self.rejects_of}" if self.rejects_of else None)

    @classmethod
    def of(cls, given: ImportOptions | dict[str, Any] | None) -> ImportOptions:
        """The options of a run's parameters, as the flow got them (a model) or as Prefect
        stores them (a dict)."""
        return given if isinstance(given, cls) else cls.model_validate(given or {})


def _filter_fields() -> dict[str, object]:
    """One optional text field per filter key any resource declares, saying which resources take it."""
    owners: dict[str, list[str]] = {}
    for resource in RESOURCES.values():
        for key in resource.filters():
            owners.setdefault(key, []).append(resource.name)
    return {
        key: (Optional[str], Field(default=None, description=f"filter of {', '.join(names)}"))
        for key, names in owners.items()
    }


ExportFilters: type[BaseModel] = create_model(  # type: ignore[call-overload]  # fields built at run time from the resources
    "ExportFilters",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Export filters; values are checked against the resource's rules (e.g. role, ISO-8601 times).",
    **_filter_fields(),
)


def filter_values(filters: BaseModel | dict[str, str] | None) -> dict[str, str]:
    """The filters that are set, as `key -> text`."""
    if filters is None:
        return {}
    if isinstance(filters, BaseModel):
        return filters.model_dump(exclude_none=True)
    return dict(filters)
