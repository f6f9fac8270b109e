"""The `bulkflow` command line: a typer app over the same flows, tasks and settings as the
API. `python -m cli` is the same command.

Importing the package sets the environment's defaults (`cli/startup.py`) first: Prefect and
polars read them as they load, and the command's modules load both."""

from cli.startup import environment_defaults

environment_defaults()
