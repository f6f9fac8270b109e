"""Prefect deployments of bulkflow, declared once in `deployments.catalog`.

`bulkflow serve` serves them all from one process against the
configured Prefect server; `bulkflow deploy` registers the same deployments on a process work
pool (through `prefect deploy`), so `prefect worker start --pool bulkflow` scales out.
"""
