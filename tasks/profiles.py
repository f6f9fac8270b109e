"""Partner profiles: `NAME.yaml` files in `BULKFLOW_PROFILES_DIR`, their keys the import
options' names (`schemas.parameters.Profile`), read where an import starts."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from bulkflow.errors import ParameterError, first_line
from bulkflow.settings import Settings
from schemas.parameters import ImportOptions, Profile


def profile_names(settings: Settings) -> list[str]:
    """The profiles there are, by name."""
    folder = settings.profiles_dir
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder.is_dir() else []


def load_profile(settings: Settings, name: str) -> Profile:
    """The profile `name`; ParameterError saying what is wrong with it (or where they are)."""
    path = Path(settings.profiles_dir) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(profile_names(settings)) or "none"
        raise ParameterError(
            f"no profile {name!r} in {settings.profiles_dir} (BULKFLOW_PROFILES_DIR; profiles: {known})"
        )
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ParameterError(f"profile {path} is not valid YAML: {first_line(exc)}") from None
    try:
        return Profile.model_validate(content or {})
    except ValidationError as invalid:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the file'}: {e['msg']}" for e in invalid.errors())
        raise ParameterError(f"profile {path}: {problems}") from None


def with_profile(settings: Settings, options: ImportOptions) -> ImportOptions:
    """The options an import runs with: its own over its profile's, if it names one."""
    if options.profile is None:
        return options
    return options.under(options.profile, load_profile(settings, options.profile))
