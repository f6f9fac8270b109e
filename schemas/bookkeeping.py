"""Tables the pipeline keeps for itself: jobs, their runs, the chunk ledger and rejects.

Exactly-once rests on `import_chunks`: a chunk's upserts, its rejects and its ledger row
commit in one transaction, so a chunk is either wholly applied and recorded, or not at all.
`landing_files` remembers which landed files the pick-up has dealt with (by location, size
and modification time, so a quiet folder is listed, not re-read).
"""

from __future__ import annotations

BOOKKEEPING_DDL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS import_jobs (
        job_key text PRIMARY KEY,
        resource text NOT NULL,
        source text NOT NULL,
        format text NOT NULL,
        content_sha256 text NOT NULL,
        chunk_size integer NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS import_runs (
        flow_run_id text PRIMARY KEY,
        job_key text NOT NULL REFERENCES import_jobs (job_key),
        started_at timestamptz NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS import_chunks (
        job_key text NOT NULL REFERENCES import_jobs (job_key),
        chunk_index integer NOT NULL,
        rows_read integer NOT NULL,
        inserted integer NOT NULL DEFAULT 0,
        updated integer NOT NULL DEFAULT 0,
        rejected integer NOT NULL DEFAULT 0,
        committed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (job_key, chunk_index)
    )""",
    """CREATE TABLE IF NOT EXISTS import_rejects (
        job_key text NOT NULL,
        chunk_index integer NOT NULL,
        line bigint NOT NULL,
        field text NOT NULL,
        rule text NOT NULL,
        message text NOT NULL,
        value text,
        raw text
    )""",
    "CREATE INDEX IF NOT EXISTS import_rejects_job_idx ON import_rejects (job_key, line)",
    """CREATE TABLE IF NOT EXISTS export_jobs (
        flow_run_id text PRIMARY KEY,
        resource text NOT NULL,
        format text NOT NULL,
        filters text NOT NULL,
        fields text NOT NULL,
        location text NOT NULL,
        rows bigint,
        bytes bigint,
        sha256 text,
        duration_s double precision,
        created_at timestamptz NOT NULL DEFAULT now(),
        finished_at timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS landing_files (
        location text NOT NULL,
        size bigint NOT NULL,
        modified text NOT NULL,
        resource text NOT NULL,
        sha256 text NOT NULL,
        outcome text NOT NULL,
        detail text,
        flow_run_id text,
        seen_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (location, size, modified)
    )""",
)
