"""Flow parameters as pydantic models: the Prefect UI renders them as forms, the API and
Prefect's `create_flow_run` validate against the same definitions."""

from __future__ import annotations

import codecs
from typing import Annotated, Any, Literal, Optional, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, create_model, field_validator

from bulkflow.errors import ParameterError
from schemas import RESOURCES
from schemas.resource import ValueFormats

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
PROFILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
"""A profile's name: its file's name without `.yaml`, and a landing folder's name."""
OnDrift = Literal["warn", "block"]
"""What an import does when the file's columns differ from the previous import's."""
OptionalFormat = Annotated[Optional[Format], WithJsonSchema({"enum": [*FORMATS, None]})]
"""A format, or none to tell it from the file's name. Its schema is one list of the formats
(not "a format or null"), so forms show a choice left empty by default: the Prefect UI's run
form, Swagger UI's upload form, the API's JSON body."""


def check_format(name: str) -> Format:
    """`name` as one of the formats we read and write; ParameterError naming them otherwise."""
    if name not in FORMATS:
        raise ParameterError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}")
    return name  # type: ignore[return-value]  # checked to be one of FORMATS just above


def _comma_list(value: object) -> object:
    """A list as text (the CLI's and a form's `NULL,N/A`) or as a list (JSON, YAML)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _comma_map(value: object) -> object:
    """A mapping as text (`Email Address=email,User ID=id`) or as a mapping (JSON, YAML)."""
    if not isinstance(value, str):
        return value
    pairs = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        header, equals, field = part.rpartition("=")
        if not equals or not header.strip() or not field.strip():
            raise ValueError(f"{part!r} is not HEADER=field")
        pairs[header.strip()] = field.strip()
    return pairs


TextList = Annotated[list[str], BeforeValidator(_comma_list)]
HeaderMap = Annotated[dict[str, str], BeforeValidator(_comma_map)]
_CHARACTER_NAMES = {"\\t": "\t", "tab": "\t", "space": " "}


def _one_character(value: str, what: str) -> str:
    value = _CHARACTER_NAMES.get(value.lower(), value)
    if len(value) != 1 or not value.isascii() or value in "\r\n":
        raise ValueError(f"the {what} is one ASCII character (not a line end), e.g. ';' or '\\t'")
    return value


class ReadOptions(BaseModel):
    """How a file is written: its CSV dialect, encoding, header and value formats."""

    model_config = ConfigDict(extra="forbid")

    delimiter: str = Field(
        default=",",
        description="CSV field delimiter: one character (',' ';' '\\t' '|' ...), or auto to sniff it from the "
        "header and the first records (Excel's sep= first line is honoured either way).",
    )
    quote: str = Field(default='"', description="CSV quote character.")
    escape: Optional[str] = Field(
        default=None, description="CSV escape character inside quotes (e.g. '\\'); default: the quote doubled."
    )
    encoding: str = Field(
        default="utf-8",
        description="Text encoding: utf-8 (strict), utf-8-sig, utf-16 (with its byte order mark), latin-1, "
        "cp1252 or any codec Python knows; the file is decoded once while staging.",
    )
    map: HeaderMap = Field(
        default_factory=dict,
        description="Header to field, e.g. 'Email Address=email,User ID=id'. Headers that differ from a field "
        "only by case, blanks, '-' or '_' match it without a map (the report lists each match).",
    )
    null_values: TextList = Field(
        default_factory=list, description="Texts read as no value, e.g. 'NULL,N/A,\\N' (an empty field always is)."
    )
    true_values: TextList = Field(
        default_factory=lambda: ["true"], description="Texts read as true (any case), e.g. 'Yes,Y,1'."
    )
    false_values: TextList = Field(
        default_factory=lambda: ["false"], description="Texts read as false (any case), e.g. 'No,N,0'."
    )
    timestamp_format: TextList = Field(
        default_factory=list,
        description="strftime patterns for timestamps, tried in order before ISO-8601, e.g. '%d.%m.%Y %H:%M'.",
    )
    timezone: str = Field(
        default="UTC", description="Time zone of timestamps written without an offset, e.g. Europe/Berlin."
    )
    on_drift: OnDrift = Field(
        default="warn",
        description="When the file's columns differ from the previous import's (of the same profile, or "
        "resource): warn (report and event) or block (refuse the file, nothing written).",
    )

    @field_validator("delimiter")
    @classmethod
    def _delimiter(cls, value: str) -> str:
        return value if value == "auto" else _one_character(value, "delimiter")

    @field_validator("quote")
    @classmethod
    def _quote(cls, value: str) -> str:
        return _one_character(value, "quote")

    @field_validator("escape")
    @classmethod
    def _escape(cls, value: Optional[str]) -> Optional[str]:
        return None if value is None else _one_character(value, "escape")

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}: e.g. utf-8, utf-16, latin-1, cp1252") from None

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        import polars as pl  # polars converts the timestamps: its own time zone database is the one that counts

        try:
            pl.Series([0], dtype=pl.Datetime("us")).dt.replace_time_zone(value)
        except pl.exceptions.PolarsError:
            raise ValueError(f"unknown time zone {value!r}: e.g. UTC, Europe/Berlin") from None
        return value

    @field_validator("true_values", "false_values")
    @classmethod
    def _some_words(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one text")
        return value

    @field_validator("timestamp_format")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if "%" not in pattern:
                raise ValueError(f"{pattern!r} is not a strftime pattern, e.g. '%d.%m.%Y %H:%M'")
        return value

    def value_formats(self) -> ValueFormats:
        """How the file's values are read (the record rules' side of these options)."""
        return ValueFormats(
            tuple(self.null_values),
            tuple(self.true_values),
            tuple(self.false_values),
            tuple(self.timestamp_format),
            self.timezone,
        )

    def of_replay(self) -> dict[str, Any]:
        """What reading a replay of rejected records changes: bulkflow wrote that file
        (UTF-8, `,`, the doubled quote, the fields' own names), while its values are still
        as the partner wrote them (null texts, booleans, timestamps keep their formats)."""
        return {"delimiter": ",", "quote": '"', "escape": None, "encoding": "utf-8", "map": {}}

    @property
    def escape_char(self) -> str:
        """The escape character, the quote itself by default (RFC 4180's doubled quote)."""
        return self.escape or self.quote

    def chosen(self) -> dict[str, Any]:
        """The read options that differ from the defaults: what makes the same bytes other rows."""
        defaults = ReadOptions()
        return {
            name: value
            for name, value in self.model_dump(include=set(ReadOptions.model_fields) - {"on_drift"}).items()
            if value != getattr(defaults, name)
        }


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

    def rows_per_chunk(self, default: int) -> int:
        """The chunk size asked for: this option's, else `default` (BULKFLOW_CHUNK_SIZE)."""
        return self.chunk_size or default


class FileOptions(ReadOptions, LoadControl):
    """What a caller sets along with a file (the API's body and form, a partner profile):
    how it is read and how it is written."""

    profile: Optional[str] = Field(
        default=None,
        pattern=PROFILE_NAME,
        description="A partner profile (BULKFLOW_PROFILES_DIR/NAME.yaml) giving the defaults of these options; "
        "an option set here (to other than its default) overrides the profile.",
    )


class Profile(FileOptions):
    """A partner profile: the options every file of one partner is read and written with
    (`NAME.yaml`, its keys the option names), and the resource its files usually go to."""

    resource: Optional[ResourceName] = Field(default=None, description="The resource the partner's files go to.")
    chunk_size: Optional[int] = Field(default=None, ge=1, description="Rows per chunk for this partner's files.")

    @field_validator("profile")
    @classmethod
    def _no_nesting(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            raise ValueError("a profile does not name another profile")
        return value


class ImportOptions(FileOptions):
    """How an import is read, cut, identified and controlled."""

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

    def under(self, name: str, profile: Profile) -> ImportOptions:
        """These options over a profile's: an option set to other than its default wins,
        every other one is the profile's."""
        given = {
            field: value
            for field, value in self.model_dump(exclude_unset=True).items()
            if value != ImportOptions.model_fields[field].get_default(call_default_factory=True)
        }
        return ImportOptions.model_validate(
            {**profile.model_dump(exclude_unset=True, exclude={"resource"}), **given, "profile": name}
        )

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
