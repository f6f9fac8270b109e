"""Prefect tasks, and the run's bookkeeping in the database around them.

The tasks (`stage`, `check`, `load`, `on_workers`, `jobs`, `export_jobs`, `landing`) wrap
the file room (`files/`) and the decision room (`decisions/`). Around them: the job and
chunk ledger (`jobs`), the table's write slot (`limits`), streamed exports (`export`),
events, artifacts and progress (`events`, `report`), run names and tags (`run_labels`),
runs started and watched (`runs`), the Dask runner (`cluster`) and retry options (`retrying`).
"""
