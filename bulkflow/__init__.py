"""bulkflow: validated, exactly-once bulk import and export for PostgreSQL, run as Prefect flows."""
