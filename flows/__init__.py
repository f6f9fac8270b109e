"""The Prefect flows, wiring only: the import flow and its chunk pipeline (both runners),
the export and nightly-export flows, the landing pick-up. The work is in `tasks/`, `files/`
and `decisions/`."""
