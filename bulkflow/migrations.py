"""The database's history: numbered migrations, frozen as the literal SQL each release ran.

A migration never changes once released: a database records the ids it has run in
`schema_migrations`, and `bulkflow.db.migrate` runs the others, in order, once. A change to
a table (a new column, a type, an index) is a new numbered migration written here by hand;
`bulkflow.db.refuse_drift` compares the declared resources with the tables and refuses to
work on a table no migration brought in line with them.

Besides the resources' tables, the pipeline keeps its own: `import_jobs`, `import_runs`, the
chunk ledger `import_chunks` and `import_rejects` (exactly-once rests on the ledger: a
chunk's rows, its rejects and its ledger row commit in one transaction), `export_jobs`, and
`landing_files` (the landed files the pick-up has dealt with, by location, size and time).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    id: str
    """Recorded in `schema_migrations`; never changes once released."""
    description: str
    statements: tuple[str, ...]


SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "id text PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001",
        "baseline: resource and bookkeeping tables (idempotent on a database of the first release)",
        (
            "CREATE TABLE IF NOT EXISTS users (id text PRIMARY KEY, email text, name text, role text, active boolean, created_at timestamptz, updated_at timestamptz)",
            "CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users ((lower(email)))",
            "CREATE TABLE IF NOT EXISTS articles (id text PRIMARY KEY, slug text, title text, body text, author_id text REFERENCES users (id), tags text[], published_at timestamptz, status text)",
            "CREATE UNIQUE INDEX IF NOT EXISTS articles_slug_key ON articles ((slug))",
            "CREATE INDEX IF NOT EXISTS articles_author_id_idx ON articles (author_id)",
            "CREATE TABLE IF NOT EXISTS comments (id text PRIMARY KEY, article_id text REFERENCES articles (id), user_id text REFERENCES users (id), body text, created_at timestamptz)",
            "CREATE INDEX IF NOT EXISTS comments_article_id_idx ON comments (article_id)",
            "CREATE INDEX IF NOT EXISTS comments_user_id_idx ON comments (user_id)",
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
        ),
    ),
    Migration(
        "0002",
        "import_rejects indexed by chunk, for resuming runs that read a committed chunk's rejects",
        ("CREATE INDEX IF NOT EXISTS import_rejects_chunk_idx ON import_rejects (job_key, chunk_index)",),
    ),
    Migration(
        "0003",
        "import_jobs.source_name: the file's name as its sender knows it (API uploads keep theirs)",
        ("ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS source_name text",),
    ),
    Migration(
        "0004",
        "import_chunks.flow_run_id: the run that committed the chunk, so a run reports its own counts apart from the job's",
        ("ALTER TABLE import_chunks ADD COLUMN IF NOT EXISTS flow_run_id text",),
    ),
    Migration(
        "0005",
        "export_jobs.row_limit: the most rows an export job was asked for (its manifest says so)",
        ("ALTER TABLE export_jobs ADD COLUMN IF NOT EXISTS row_limit bigint",),
    ),
    Migration(
        "0006",
        "import_jobs.failure_*: how the last failed run of a job ended (error class, retryable or not, its line)",
        (
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS failed_at timestamptz",
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS failure_class text",
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS failure_retryable boolean",
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS failure_message text",
        ),
    ),
    Migration(
        "0007",
        "import_chunks.unchanged: accepted rows whose stored values already equal the file's (not written)",
        ("ALTER TABLE import_chunks ADD COLUMN IF NOT EXISTS unchanged integer NOT NULL DEFAULT 0",),
    ),
    Migration(
        "0008",
        "import_jobs.mode and .dry_run: how a job writes (upsert, insert, update) and whether it only predicts",
        (
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS mode text NOT NULL DEFAULT 'upsert'",
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS dry_run boolean NOT NULL DEFAULT false",
        ),
    ),
    Migration(
        "0009",
        "import_jobs.atomic and .applied_at: an all-or-nothing job stages its chunks, then applies them once",
        (
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS atomic boolean NOT NULL DEFAULT false",
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS applied_at timestamptz",
        ),
    ),
    Migration(
        "0010",
        "import_jobs.deleted and .deleted_dependents: what a --mode replace deleted (rows, and rows of other tables)",
        (
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS deleted bigint NOT NULL DEFAULT 0",
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS deleted_dependents jsonb NOT NULL DEFAULT '{}'",
        ),
    ),
    Migration(
        "0011",
        "import_jobs.profile and .columns: the partner profile an import read its file with, and the columns it saw",
        (
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS profile text",
            "ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS columns jsonb",
            "CREATE INDEX IF NOT EXISTS import_jobs_columns_seen_idx ON import_jobs (resource, profile, created_at) "
            "WHERE columns IS NOT NULL",
        ),
    ),
    Migration(
        "0012",
        "import_jobs.budget_exceeded: why an import's error budget was spent, and why it went on",
        ("ALTER TABLE import_jobs ADD COLUMN IF NOT EXISTS budget_exceeded text",),
    ),
    Migration(
        "0013",
        "change tracking for incremental exports: each resource row's bulkflow_xid (the transaction that last wrote "
        "it, indexed), export_tombstones (rows deleted, by anyone) and export_truncations",
        (
            "CREATE TABLE IF NOT EXISTS export_tombstones (resource text NOT NULL, id text NOT NULL, "
            "deleted_xid xid8 NOT NULL DEFAULT pg_current_xact_id(), deleted_at timestamptz NOT NULL DEFAULT now())",
            "CREATE INDEX IF NOT EXISTS export_tombstones_xid_idx ON export_tombstones (resource, deleted_xid)",
            "CREATE INDEX IF NOT EXISTS export_tombstones_at_idx ON export_tombstones (deleted_at)",
            "CREATE TABLE IF NOT EXISTS export_truncations (resource text NOT NULL, "
            "truncated_xid xid8 NOT NULL DEFAULT pg_current_xact_id(), truncated_at timestamptz NOT NULL DEFAULT now())",
            "CREATE OR REPLACE FUNCTION bulkflow_stamp_xid() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN NEW.bulkflow_xid := pg_current_xact_id(); RETURN NEW; END$$",
            "CREATE OR REPLACE FUNCTION bulkflow_tombstones() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN INSERT INTO export_tombstones (resource, id) SELECT TG_TABLE_NAME, gone.id FROM gone; "
            "RETURN NULL; END$$",
            "CREATE OR REPLACE FUNCTION bulkflow_truncated() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN INSERT INTO export_truncations (resource) VALUES (TG_TABLE_NAME); RETURN NULL; END$$",
            "ALTER TABLE users ADD COLUMN IF NOT EXISTS bulkflow_xid xid8 NOT NULL DEFAULT pg_current_xact_id()",
            "CREATE INDEX IF NOT EXISTS users_bulkflow_xid_idx ON users (bulkflow_xid)",
            "DROP TRIGGER IF EXISTS users_bulkflow_xid ON users",
            "CREATE TRIGGER users_bulkflow_xid BEFORE UPDATE ON users FOR EACH ROW "
            "WHEN (NEW.bulkflow_xid IS DISTINCT FROM pg_current_xact_id()) EXECUTE FUNCTION bulkflow_stamp_xid()",
            "DROP TRIGGER IF EXISTS users_bulkflow_tombstones ON users",
            "CREATE TRIGGER users_bulkflow_tombstones AFTER DELETE ON users REFERENCING OLD TABLE AS gone "
            "FOR EACH STATEMENT EXECUTE FUNCTION bulkflow_tombstones()",
            "DROP TRIGGER IF EXISTS users_bulkflow_truncated ON users",
            "CREATE TRIGGER users_bulkflow_truncated AFTER TRUNCATE ON users FOR EACH STATEMENT EXECUTE FUNCTION bulkflow_truncated()",
            "ALTER TABLE articles ADD COLUMN IF NOT EXISTS bulkflow_xid xid8 NOT NULL DEFAULT pg_current_xact_id()",
            "CREATE INDEX IF NOT EXISTS articles_bulkflow_xid_idx ON articles (bulkflow_xid)",
            "DROP TRIGGER IF EXISTS articles_bulkflow_xid ON articles",
            "CREATE TRIGGER articles_bulkflow_xid BEFORE UPDATE ON articles FOR EACH ROW "
            "WHEN (NEW.bulkflow_xid IS DISTINCT FROM pg_current_xact_id()) EXECUTE FUNCTION bulkflow_stamp_xid()",
            "DROP TRIGGER IF EXISTS articles_bulkflow_tombstones ON articles",
            "CREATE TRIGGER articles_bulkflow_tombstones AFTER DELETE ON articles REFERENCING OLD TABLE AS gone "
            "FOR EACH STATEMENT EXECUTE FUNCTION bulkflow_tombstones()",
            "DROP TRIGGER IF EXISTS articles_bulkflow_truncated ON articles",
            "CREATE TRIGGER articles_bulkflow_truncated AFTER TRUNCATE ON articles FOR EACH STATEMENT EXECUTE FUNCTION bulkflow_truncated()",
            "ALTER TABLE comments ADD COLUMN IF NOT EXISTS bulkflow_xid xid8 NOT NULL DEFAULT pg_current_xact_id()",
            "CREATE INDEX IF NOT EXISTS comments_bulkflow_xid_idx ON comments (bulkflow_xid)",
            "DROP TRIGGER IF EXISTS comments_bulkflow_xid ON comments",
            "CREATE TRIGGER comments_bulkflow_xid BEFORE UPDATE ON comments FOR EACH ROW "
            "WHEN (NEW.bulkflow_xid IS DISTINCT FROM pg_current_xact_id()) EXECUTE FUNCTION bulkflow_stamp_xid()",
            "DROP TRIGGER IF EXISTS comments_bulkflow_tombstones ON comments",
            "CREATE TRIGGER comments_bulkflow_tombstones AFTER DELETE ON comments REFERENCING OLD TABLE AS gone "
            "FOR EACH STATEMENT EXECUTE FUNCTION bulkflow_tombstones()",
            "DROP TRIGGER IF EXISTS comments_bulkflow_truncated ON comments",
            "CREATE TRIGGER comments_bulkflow_truncated AFTER TRUNCATE ON comments FOR EACH STATEMENT EXECUTE FUNCTION bulkflow_truncated()",
        ),
    ),
    Migration(
        "0014",
        "the load history: export_jobs keep their whole manifest, whether and how they failed and how they were "
        "started; export_cursors, the cursors exports keep by name; import_history, one entry a finished import run",
        (
            "ALTER TABLE export_jobs ADD COLUMN IF NOT EXISTS manifest jsonb",
            "ALTER TABLE export_jobs ADD COLUMN IF NOT EXISTS since text",
            "ALTER TABLE export_jobs ADD COLUMN IF NOT EXISTS started_via text",
            "ALTER TABLE export_jobs ADD COLUMN IF NOT EXISTS failed_at timestamptz",
            "ALTER TABLE export_jobs ADD COLUMN IF NOT EXISTS failure_message text",
            "UPDATE export_jobs SET manifest = jsonb_build_object('job_id', flow_run_id, 'resource', resource, "
            "'format', format, 'filters', filters::jsonb, 'fields', fields::jsonb, 'limit', row_limit, 'rows', rows, "
            "'bytes', bytes, 'sha256', sha256, 'duration_s', duration_s, 'location', location) "
            "WHERE finished_at IS NOT NULL AND manifest IS NULL",
            "CREATE INDEX IF NOT EXISTS import_jobs_created_idx ON import_jobs (created_at)",
            "CREATE INDEX IF NOT EXISTS export_jobs_created_idx ON export_jobs (created_at)",
            "ALTER TABLE export_jobs ADD COLUMN IF NOT EXISTS cursor_name text",
            """CREATE TABLE IF NOT EXISTS export_cursors (
        name text NOT NULL,
        resource text NOT NULL,
        cursor text NOT NULL,
        full_at timestamptz NOT NULL,
        flow_run_id text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (name, resource)
    )""",
            """CREATE TABLE IF NOT EXISTS import_history (
        flow_run_id text PRIMARY KEY,
        resource text NOT NULL,
        status text NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz NOT NULL DEFAULT now(),
        entry jsonb NOT NULL
    )""",
            "CREATE INDEX IF NOT EXISTS import_history_started_idx ON import_history (started_at)",
        ),
    ),
)
