"""Landing storage (a folder or bucket prefix): files waiting for import, what became of
each, and the uploads the HTTP API receives.

Layout: `<landing>/<resource>/<file>`, e.g. `landing/users/partner-2026-11-30.csv.gz`, and
`<landing>/<profile>/<resource>/<file>` for a partner's files, read with its profile
(`landing/acme-de/users/export.csv`).
Names starting with `.` or `_`, and `.part`/`.tmp` files, are still being written and wait:
write a file under such a name, then rename it (an atomic step on every file system).
"""

from __future__ import annotations

import io
import re
import uuid
from dataclasses import dataclass
from typing import IO, Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging import get_logger

from bulkflow.db import execute, query_one
from bulkflow.errors import InputError, first_line
from bulkflow.settings import Settings
from files.copying import ExpandedSizeLimit, checked_copy
from files.formats import detect_format, display_name, named_tsv
from files.storage import filesystem, open_file
from schemas import RESOURCES
from schemas.parameters import PROFILE_NAME
from tasks.retrying import bookkeeping_task_options
from tasks.run_labels import RETRYABLE_FAILURE, import_run_name, run_tags
from tasks.runs import IMPORT, our_message, start_run

Outcome = Literal["imported", "duplicate", "failed"]
_UNFINISHED_SUFFIXES = (".part", ".tmp", ".partial")


@dataclass(frozen=True)
class LandedFile:
    location: str
    resource: str
    size: int
    modified: str
    """Modification time (or ETag) as the storage reports it: with size, tells a file changed."""
    profile: str | None = None
    """The partner profile of the folder the file landed in."""

    @property
    def name(self) -> str:
        """The file's name, without its folder (what task runs and the summary name it by)."""
        return display_name(self.location)


def prepare_landing(settings: Settings) -> list[str]:
    """Create the landing folder of each resource (where partners drop files); returns them."""
    root = settings.landing_root()
    fs, path = filesystem(settings, root)
    folders = []
    for resource in RESOURCES:
        fs.makedirs(f"{path}/{resource}", exist_ok=True)
        folders.append(f"{root}/{resource}")
    return folders


def list_landed(settings: Settings, root: str) -> list[LandedFile]:
    """Every finished file under `<root>/<resource>/` and `<root>/<profile>/<resource>/`:
    users first, then articles, then comments (a resource references only earlier ones);
    for each, the files without a profile first, then by profile, then by name."""
    fs, path = filesystem(settings, root)
    local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
    profiles = [None, *_profile_folders(fs, path)]
    files: list[LandedFile] = []
    for resource in RESOURCES:
        for profile in profiles:
            folder = f"{path}/{resource}" if profile is None else f"{path}/{profile}/{resource}"
            if not fs.isdir(folder):
                continue
            for info in sorted(fs.ls(folder, detail=True), key=lambda i: i["name"]):
                name = info["name"].rsplit("/", 1)[-1]
                if info["type"] != "file" or name.startswith((".", "_")) or name.endswith(_UNFINISHED_SUFFIXES):
                    continue
                modified = info.get("mtime") or info.get("LastModified") or info.get("ETag") or ""
                location = info["name"] if local else fs.unstrip_protocol(info["name"])
                files.append(LandedFile(location, resource, int(info["size"]), str(modified), profile))
    return files


def _profile_folders(fs: Any, path: str) -> list[str]:
    """The folders of the landing root named like a profile (not like a resource)."""
    if not fs.isdir(path):
        return []
    names = (
        info["name"].rstrip("/").rsplit("/", 1)[-1] for info in fs.ls(path, detail=True) if info["type"] == "directory"
    )
    return sorted(name for name in names if name not in RESOURCES and re.match(PROFILE_NAME, name))


def unseen_files(settings: Settings, root: str) -> list[LandedFile]:
    """Landed files no pick-up has dealt with yet (same location, size and mtime = seen), in
    dependency order. Cheap: a listing and one lookup per file, no flow run."""
    return [file for file in list_landed(settings, root) if not _seen(settings, file)]


@task(**bookkeeping_task_options("find-new-files", "find-new-files", retry_delay_s=5))
def find_new_files(settings: Settings, root: str) -> list[LandedFile]:
    """The pick-up's `unseen_files`, as a task of its run."""
    return unseen_files(settings, root)


def import_batches(files: list[LandedFile], per_resource: int) -> list[list[LandedFile]]:
    """The files (in dependency order) as batches imported at once: files of one resource, at
    most `per_resource` (the imports that may write its table at once) in name order. A batch
    starts when the one before it finished, so articles wait for every users file."""
    batches: list[list[LandedFile]] = []
    for file in files:
        last = batches[-1] if batches else None
        if last is not None and last[0].resource == file.resource and len(last) < per_resource:
            last.append(file)
        else:
            batches.append([file])
    return batches


def import_parameters(file: LandedFile) -> dict[str, Any]:
    """The import flow's parameters for a landed file (with its folder's profile)."""
    parameters: dict[str, Any] = {"resource": file.resource, "source": file.location}
    if file.profile is not None:
        parameters["options"] = {"profile": file.profile}
    return parameters


def imported_here(settings: Settings, file: LandedFile) -> bool:
    """Whether the pick-up imports the file itself (a subflow run in its own process), rather
    than starting a run of the import deployment: a file up to BULKFLOW_LANDING_INLINE_BYTES."""
    return file.size <= settings.landing_inline_bytes


def start_import(file: LandedFile) -> FlowRun:
    """An import run of the file on the import deployment (with its folder's profile),
    tagged `via:landing`, for any worker."""
    name = import_run_name(file.resource, file.location)
    return start_run(IMPORT, import_parameters(file), run_tags(file.resource, "landing"), name)


def outcome_of(run: FlowRun) -> tuple[Outcome | None, str | None]:
    """How a finished import run ended: imported; failed (with the reason) for a file that
    cannot be imported; None (with the reason) when a later pick-up may succeed: a passing
    failure, a crashed or cancelled run (a re-run resumes from the committed chunks)."""
    return outcome_of_state(run.state, retryable=RETRYABLE_FAILURE in run.tags)


def outcome_of_state(state: State | None, *, retryable: bool) -> tuple[Outcome | None, str | None]:
    """`outcome_of` a run's final state; `retryable`: the run failed for a passing reason."""
    if state is not None and state.is_completed():
        return "imported", None
    message = our_message(state.message) if state is not None else None
    if state is not None and state.is_failed() and not retryable:
        return "failed", message
    return None, message or (state.name if state is not None else "no state")


def _seen(settings: Settings, file: LandedFile) -> bool:
    return (
        query_one(
            settings,
            "SELECT 1 FROM landing_files WHERE location = $1 AND size = $2 AND modified = $3",
            (file.location, file.size, file.modified),
        )
        is not None
    )


@task(name="content-sha256", task_run_name="sha256-{file.name}", cache_policy=NO_CACHE)
def content_sha256(settings: Settings, file: LandedFile) -> str:
    """The checksum that names an import job (the same bytes the import hashes)."""
    with open_file(settings, file.location, "rb") as stream:
        return checked_copy(stream, None, text=False, source=file.location).sha256


def earlier_import(settings: Settings, resource: str, sha256: str) -> str | None:
    """When an import of this content into this resource has finished before (whatever the
    file was called and whichever key the job had), what it was: `<file name> (job <key>,
    finished <time>)`; None otherwise."""
    row = query_one(
        settings,
        "SELECT source_name, job_key, to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
        "FROM import_jobs WHERE resource = $1 AND content_sha256 = $2 AND finished_at IS NOT NULL "
        "ORDER BY finished_at LIMIT 1",
        (resource, sha256),
    )
    if row is None:
        return None
    name, job_key, finished = row
    return f"{name or 'an earlier file'} (job {job_key}, finished {finished} UTC)"


@task(**bookkeeping_task_options("record-landed-file", "record-{outcome}-{file.name}"))
def record_outcome(
    settings: Settings, file: LandedFile, sha256: str, outcome: Outcome, detail: str | None, flow_run_id: str | None
) -> None:
    """Remember the file so later pick-ups skip it (a changed file is a new file)."""
    execute(
        settings,
        "INSERT INTO landing_files (location, size, modified, resource, sha256, outcome, detail, flow_run_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (location, size, modified) DO NOTHING",
        (file.location, file.size, file.modified, file.resource, sha256, outcome, detail, flow_run_id),
    )


def store_upload(settings: Settings, stream: IO[bytes], filename: str, format: str | None) -> str:
    """Copy an uploaded file into `<landing>/uploads/<sha256>.<ext>` and return its location.

    The copy is written under a hidden name and renamed when complete, so nothing ever reads
    a partial upload; the name is the content checksum, so the same upload is stored once.
    Its content is held to BULKFLOW_MAX_SOURCE_BYTES as it arrives, a compressed upload by
    what it expands to (TooLargeError before anything is stored).
    """
    fmt, compression = detect_format(filename, format)
    if compression == "gzip":
        stream = io.BufferedReader(ExpandedSizeLimit(stream, filename, settings.max_source_bytes))
    extension = ".tsv" if fmt == "csv" and named_tsv(filename) else f".{fmt}"  # a .tsv name means tabs
    suffix = extension + (".gz" if compression else "")
    root = f"{settings.landing_root()}/uploads"
    partial = f"{root}/.upload-{uuid.uuid4().hex}{suffix}"
    fs = filesystem(settings, partial)[0]
    try:
        with open_file(settings, partial, "wb", auto_mkdir=True) as out:
            copied = checked_copy(stream, out, text=False, source=filename, limit=settings.max_source_bytes)
        digest = copied.sha256
        if copied.size == 0:
            raise InputError(f"{filename} is empty: nothing to import")
    except BaseException:
        if fs.exists(partial):
            fs.rm(partial)  # a refused or failed upload leaves nothing behind
        raise
    final = f"{root}/{digest}{suffix}"
    fs.mv(partial, final)
    return final


def is_upload(settings: Settings, location: str) -> bool:
    """True for a file `store_upload` stored."""
    return location.startswith(f"{settings.landing_root()}/uploads/")


def discard_upload(settings: Settings, location: str) -> None:
    """Remove a stored upload whose import failed on its content: no job will read it again,
    and the same bytes would fail the same way (a new upload of them is stored anew). Called
    while that failure is raised, so a storage that cannot remove it is logged, never raised
    in its place."""
    if not is_upload(settings, location):
        return
    try:
        fs, path = filesystem(settings, location)
        if fs.exists(path):
            fs.rm(path)
    except Exception as kept:  # noqa: BLE001 - the content error is the run's error, not this one
        get_logger("bulkflow.uploads").warning("could not remove the failed upload %s: %s", location, first_line(kept))
