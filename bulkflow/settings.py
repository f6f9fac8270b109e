"""The one settings model. Entry points (a CLI command, a flow run, the API app) build it
once with `Settings()` and hand it down; nothing below them reads the environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.json_schema import JsonDict
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from bulkflow.errors import ParameterError, first_line

DEFAULT_ROLES = ("admin", "author", "editor", "reader")
MAX_LOAD_WORKERS = 32
SECONDS: JsonDict = {"unit": "seconds"}
BYTES: JsonDict = {"unit": "bytes"}


class SettingsError(ParameterError):
    """A variable of the environment or `.env` has a value bulkflow cannot use; the message
    names each such variable, the value given and what is allowed, on one line."""


class Settings(BaseSettings):
    """Configuration from the environment and an optional `.env` file.

    The database is, in order of precedence: `DATABASE_URL`; the seed's
    `DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD`; otherwise an embedded PostgreSQL under
    `BULKFLOW_HOME`, started on demand and reused by later runs.
    """

    # No populate_by_name: field names must never be read as environment variables (the
    # field `home` would pick up $HOME).
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    def __init__(self, **values: Any) -> None:
        """Read the settings; SettingsError (one line per entry point's `error:`) when a
        variable has a value that cannot be used."""
        try:
            super().__init__(**values)
        except ValidationError as invalid:
            raise SettingsError("; ".join(_explain(error) for error in invalid.errors())) from None
        except _SourceError as unreadable:
            raise SettingsError(first_line(unreadable)) from None

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    db_host: str | None = Field(default=None, validation_alias="DB_HOST")
    db_port: int = Field(default=5432, validation_alias="DB_PORT")
    db_name: str = Field(default="postgres", validation_alias="DB_NAME")
    db_user: str = Field(default="postgres", validation_alias="DB_USER")
    db_password: str = Field(default="", validation_alias="DB_PASSWORD")

    home: Path = Field(default=Path(".bulkflow"), validation_alias="BULKFLOW_HOME")
    chunk_size: int = Field(default=50_000, ge=1, validation_alias="BULKFLOW_CHUNK_SIZE")
    load_workers: int = Field(
        default=2, ge=1, le=MAX_LOAD_WORKERS, validation_alias=AliasChoices("BULKFLOW_LOAD_WORKERS")
    )
    task_runner: Literal["thread", "dask"] = Field(default="thread", validation_alias="BULKFLOW_TASK_RUNNER")
    """Where an import's chunk work runs: threads of the flow's process, or a Dask cluster
    (the `dask` extra), whose workers read, validate and load their chunks themselves."""
    dask_address: str | None = Field(default=None, validation_alias="BULKFLOW_DASK_ADDRESS")
    """Scheduler of an existing Dask cluster (`tcp://host:8786`); none: each import starts a
    local cluster of `BULKFLOW_DASK_WORKERS` worker processes."""
    dask_workers: int = Field(default=2, ge=1, le=MAX_LOAD_WORKERS, validation_alias="BULKFLOW_DASK_WORKERS")
    allowed_roles: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_ROLES, validation_alias="BULKFLOW_ALLOWED_ROLES"
    )
    profiles_dir: Path = Field(default=Path("profiles"), validation_alias="BULKFLOW_PROFILES_DIR")
    """Where the partner profiles are: one `NAME.yaml` each."""
    export_url: str | None = Field(default=None, validation_alias="BULKFLOW_EXPORT_URL")
    """Where async exports are written (a local folder or an fsspec URL such as s3://bucket/prefix);
    default `BULKFLOW_HOME/exports`."""
    nightly_cron: str = Field(default="0 2 * * *", validation_alias="BULKFLOW_NIGHTLY_CRON")
    tombstone_days: int = Field(default=30, ge=1, validation_alias="BULKFLOW_TOMBSTONE_DAYS")
    """How long the deletes incremental exports report are kept (pruned by the nightly
    deployment); an export from a cursor older than that is refused (do a full export)."""
    full_every_days: int = Field(default=7, ge=1, validation_alias="BULKFLOW_FULL_EVERY_DAYS")
    """The nightly deployment writes a full snapshot when its last one is this old, else the
    changes since its last successful run."""
    download_url_ttl: int = Field(default=300, ge=1, le=604_800, validation_alias="BULKFLOW_DOWNLOAD_URL_TTL")
    """Seconds a download link of an export on object storage is valid (GET
    /v1/exports/{id}/download redirects to one, signed for that request; S3 allows a week)."""
    history_days: int = Field(default=365, ge=1, validation_alias="BULKFLOW_HISTORY_DAYS")
    """How long the load history (`bulkflow history`, GET /v1/imports) keeps imports and
    exports; pruned by the nightly deployment."""
    max_imports_per_resource: int = Field(default=1, ge=1, validation_alias="BULKFLOW_MAX_IMPORTS_PER_RESOURCE")
    """Imports that may write one table at once, however many workers run (the others wait)."""
    error_rate_alert: float = Field(default=0.1, ge=0.0, le=1.0, validation_alias="BULKFLOW_ERROR_RATE_ALERT")
    """An import rejecting more than this share of its rows also emits `bulkflow.import.high-error-rate`."""
    reject_sample_size: int = Field(default=20, ge=0, validation_alias="BULKFLOW_REJECT_SAMPLE")
    port: int = Field(default=3000, validation_alias="PORT")

    api_token: SecretStr | None = Field(default=None, validation_alias="API_TOKEN")
    """When set, every /v1 route of the HTTP API needs `Authorization: Bearer <token>`."""
    landing_url: str | None = Field(default=None, validation_alias="BULKFLOW_LANDING_URL")
    """Landing folder or bucket prefix (fsspec URL); default `BULKFLOW_HOME/landing`. The pick-up
    imports `<landing>/<resource>/<file>`; API uploads are kept under `<landing>/uploads/`."""
    landing_interval_s: int = Field(
        default=60, ge=5, validation_alias="BULKFLOW_LANDING_INTERVAL", json_schema_extra=SECONDS
    )
    """How often the landing watcher looks for waiting files (no flow run unless some wait)."""
    landing_start_timeout_s: int = Field(
        default=600, ge=1, validation_alias="BULKFLOW_LANDING_START_TIMEOUT", json_schema_extra=SECONDS
    )
    """How long a pick-up waits for a runner or worker to start a file's import run; then the
    run is cancelled and the file left for the next pick-up."""
    landing_inline_bytes: int = Field(
        default=16 << 20, ge=0, validation_alias="BULKFLOW_LANDING_INLINE_BYTES", json_schema_extra=BYTES
    )
    """A landed file up to this size is imported by the pick-up itself, as a subflow run of
    its own (a new process per small file costs more than its import); a larger one becomes
    a run of the import deployment, for any runner or worker. 0: every file a deployment run."""
    export_connections: int | None = Field(default=None, ge=1, le=16, validation_alias="BULKFLOW_EXPORT_CONNECTIONS")
    """Connections an NDJSON or CSV export of a large table reads over, each an id range of
    one shared snapshot (the export stays one consistent view of the table); the rows are
    written in id order whatever the number. Unset: 2 on a machine of 4 cores or more, else
    1 (on 2 cores one connection already keeps both busy: a second was slower)."""

    max_source_bytes: int = Field(
        default=5 << 30, ge=1, validation_alias="BULKFLOW_MAX_SOURCE_BYTES", json_schema_extra=BYTES
    )
    """Largest upload or download accepted (default 5 GiB)."""
    max_record_bytes: int = Field(
        default=16 << 20, ge=1024, validation_alias="BULKFLOW_MAX_RECORD_BYTES", json_schema_extra=BYTES
    )
    """Longest record (CSV row, NDJSON line, JSON array element) read; a longer one is
    rejected as record_too_large without being held in memory (default 16 MiB)."""
    fetch_timeout_s: float = Field(
        default=900.0, gt=0, validation_alias="BULKFLOW_FETCH_TIMEOUT", json_schema_extra=SECONDS
    )
    """Longest a remote download may take, in seconds."""
    url_schemes: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("http", "https"), validation_alias="BULKFLOW_URL_SCHEMES"
    )
    """Schemes remote sources may use (add `s3` for `s3://` sources, with the `s3` extra)."""
    s3_endpoint_url: str | None = Field(default=None, validation_alias="BULKFLOW_S3_ENDPOINT_URL")
    """Endpoint of an S3-compatible store for `s3://` sources, landing and export targets
    (default: AWS). Credentials: the usual AWS variables, profiles or roles."""
    allow_private_urls: bool = Field(default=False, validation_alias="BULKFLOW_ALLOW_PRIVATE_URLS")
    """Allow remote sources on loopback, private, link-local and metadata addresses."""

    @field_validator("allowed_roles", "url_schemes", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @property
    def embedded(self) -> bool:
        """True when no external database is configured and the embedded one is used."""
        return self.database_url is None and self.db_host is None

    def export_connections_here(self) -> int:
        """The connections an export reads over on this machine (`export_connections`)."""
        return self.export_connections or (2 if (os.cpu_count() or 1) >= 4 else 1)

    def export_root(self) -> str:
        return (self.export_url or str(Path(self.home).resolve() / "exports")).rstrip("/")

    def landing_root(self) -> str:
        return (self.landing_url or str(Path(self.home).resolve() / "landing")).rstrip("/")

    def external_database_url(self) -> str | None:
        """The configured server's URL, or None when the embedded database is to be used."""
        if self.database_url:
            return self.database_url
        if self.db_host:
            credentials = quote(self.db_user, safe="")
            if self.db_password:
                credentials += ":" + quote(self.db_password, safe="")
            return f"postgresql://{credentials}@{self.db_host}:{self.db_port}/{self.db_name}"
        return None


_ALLOWED = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be more than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "literal_error": "must be one of {expected}",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
}


def _explain(error: ErrorDetails) -> str:
    """`BULKFLOW_LANDING_INTERVAL=2: must be at least 5 seconds`."""
    variable = ".".join(str(part) for part in error["loc"]) or "settings"
    template = _ALLOWED.get(error["type"])
    allowed = template.format(**error.get("ctx", {})) if template else error["msg"][:1].lower() + error["msg"][1:]
    unit = _unit_of(variable)
    if unit and error["type"] in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        allowed += f" {unit}"
    return f"{variable}={error.get('input')}: {allowed}"


def _unit_of(variable: str) -> str | None:
    for field in Settings.model_fields.values():
        if field.validation_alias == variable and isinstance(field.json_schema_extra, dict):
            unit = field.json_schema_extra.get("unit")
            return str(unit) if unit else None
    return None
