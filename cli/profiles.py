"""`bulkflow profiles`: the partner profiles there are, and what one makes of a file."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from bulkflow.settings import Settings
from cli.output import errors_as_exit, stderr

app = typer.Typer(no_args_is_help=True, help="Partner profiles (BULKFLOW_PROFILES_DIR/NAME.yaml).")


@app.command("list")
def list_command() -> None:
    """Each profile: its name, resource and the options it sets."""
    from tasks.profiles import load_profile, profile_names

    with errors_as_exit():
        settings = Settings()
        names = profile_names(settings)
        if not names:
            stderr.print(f"no profiles in {settings.profiles_dir} (BULKFLOW_PROFILES_DIR)", highlight=False)
        for name in names:
            profile = load_profile(settings, name)
            chosen = profile.model_dump(exclude_unset=True, exclude={"resource"})
            options = ", ".join(f"{key}={value}" for key, value in chosen.items())
            typer.echo(f"{name}\t{profile.resource or '-'}\t{options}")


@app.command("check")
def check_command(
    name: Annotated[str, typer.Argument(help="the profile")],
    source: Annotated[str, typer.Argument(help="a file, as the partner sends it")],
    resource: Annotated[Optional[str], typer.Option("--resource", "-r", help="default: the profile's resource")] = None,
    format: Annotated[Optional[str], typer.Option("--format", "-f", help="csv, ndjson, json, parquet")] = None,
) -> None:
    """Read a file with a profile as an import would, and print how it would be read; nothing is imported.

    The dialect is sniffed and the header matched as an import does; the result is printed
    as JSON (the report's `reading`)."""
    from bulkflow.errors import ParameterError
    from schemas import get_resource
    from schemas.parameters import ImportOptions, check_format
    from tasks.profiles import load_profile
    from tasks.stage import read_plan

    with errors_as_exit():
        settings = Settings()
        profile = load_profile(settings, name)
        chosen = resource or profile.resource
        if chosen is None:
            raise ParameterError(f"profile {name} names no resource: pass --resource")
        options = ImportOptions(profile=name).under(name, profile)
        given_format = check_format(format) if format else None
        staged, reading = read_plan(get_resource(chosen), source, given_format, options, settings)
        staged.cleanup()
    typer.echo(reading.model_dump_json(indent=2))
