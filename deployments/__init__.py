"""Prefect deployments of bulkflow, declared once in `deployments.catalog`.

`bulkflow serve` serves them all from one process against the
configured Prefect server; `prefect.yaml` declares the same deployments for a process work
pool, so `prefect deploy --all` and `prefect worker start --pool bulkflow` scale out.
"""
