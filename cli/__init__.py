"""The `bulkflow` command line: a typer app over the same flows, tasks and settings as the
API. `python -m cli` is the same command."""
