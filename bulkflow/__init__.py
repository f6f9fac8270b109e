"""The ground floor of bulkflow: settings, typed errors, database connections (with the
migrations and the drift check), the embedded PostgreSQL, the console. Every other folder
uses it; it imports nothing of theirs."""
