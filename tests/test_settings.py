"""The one settings model: database precedence, seed variables, list parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.app import create_app
from bulkflow.errors import ParameterError
from bulkflow.settings import DEFAULT_ROLES, Settings, SettingsError
from cli.app import app


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "BULKFLOW_ALLOWED_ROLES"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_embedded_database_when_nothing_is_configured(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings(_env_file=None)
    assert settings.embedded and settings.external_database_url() is None
    assert settings.allowed_roles == DEFAULT_ROLES


def test_seed_variables_build_the_url(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DB_HOST": "db",
        "DB_PORT": "5433",
        "DB_NAME": "app",
        "DB_USER": "me",
        "DB_PASSWORD": "p@ss:w",
    }.items():
        clean_env.setenv(name, value)
    assert Settings(_env_file=None).external_database_url() == "postgresql://me:p%40ss%3Aw@db:5433/app"


def test_database_url_wins_over_seed_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("DB_HOST", "db")
    clean_env.setenv("DATABASE_URL", "postgresql://u@elsewhere/x")
    assert Settings(_env_file=None).external_database_url() == "postgresql://u@elsewhere/x"


def test_allowed_roles_from_a_comma_list(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BULKFLOW_ALLOWED_ROLES", "admin, manager ,")
    assert Settings(_env_file=None).allowed_roles == ("admin", "manager")


def test_dotenv_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DB_HOST=from-file\nBULKFLOW_CHUNK_SIZE=123\n")
    settings = Settings(_env_file=env_file)
    assert settings.db_host == "from-file" and settings.chunk_size == 123


def test_flow_parameter_literal_matches_the_resources() -> None:
    from typing import get_args

    from flows.import_flow import ResourceName
    from schemas import RESOURCES

    assert list(get_args(ResourceName)) == list(RESOURCES)


def test_field_names_are_not_read_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    """Only the documented variables count: $HOME must not become BULKFLOW_HOME."""
    clean_env.delenv("BULKFLOW_HOME", raising=False)
    clean_env.setenv("HOME", "/somewhere/else")
    clean_env.setenv("CHUNK_SIZE", "7")
    settings = Settings(_env_file=None)
    assert str(settings.home) == ".bulkflow" and settings.chunk_size == 50_000


def test_errors_carry_their_facts_through_pickling() -> None:
    """Prefect pickles a failed run's exception: the fields must survive the trip."""
    import pickle

    from bulkflow.errors import InputError, InvariantError, RetryableError, is_retryable

    error = InputError("bad.csv is not valid UTF-8 (line 3, byte 17)", source="bad.csv", line=3)
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is InputError and str(again) == str(error)
    assert again.facts() == {"source": "bad.csv", "line": 3}
    assert is_retryable(RetryableError("lost", sqlstate="08006")) and not is_retryable(again)
    assert not is_retryable(InvariantError("inserted + updated + unchanged + rejected != rows read"))


@pytest.mark.parametrize(
    ("driver_error", "sqlstate", "typed"),
    [
        ("OperationalError", None, "DatabaseUnavailable"),  # no answer: the connection was lost
        ("OperationalError", "40001", "DatabaseUnavailable"),  # serialization failure
        ("OperationalError", "57P01", "DatabaseUnavailable"),  # admin shutdown
        ("ProgrammingError", "42P01", "DatabaseError"),  # undefined table: a retry repeats it
        ("IntegrityError", "23505", "DatabaseError"),
    ],
)
def test_driver_errors_become_typed_errors_where_they_are_raised(
    driver_error: str, sqlstate: str | None, typed: str
) -> None:
    import adbc_driver_manager

    from bulkflow.errors import DatabaseError, DatabaseUnavailable, database_error, is_retryable

    raised = getattr(adbc_driver_manager, driver_error)(
        "said the server", status_code=adbc_driver_manager.AdbcStatusCode.IO, sqlstate=sqlstate
    )
    error = database_error(raised, "PostgreSQL refused a statement")
    assert type(error).__name__ == typed and isinstance(error, DatabaseError)
    assert error.sqlstate == sqlstate and str(error) == "PostgreSQL refused a statement: said the server"
    assert is_retryable(error) == isinstance(error, DatabaseUnavailable)
    assert not is_retryable(raised)  # the driver's own error is never classified past the boundary


def test_a_bad_setting_names_the_variable_the_value_and_what_is_allowed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BULKFLOW_LANDING_INTERVAL", "2")
    clean_env.setenv("BULKFLOW_TASK_RUNNER", "spark")
    clean_env.setenv("DB_PORT", "five")
    with pytest.raises(SettingsError) as invalid:
        Settings(_env_file=None)
    message = str(invalid.value)
    assert message.splitlines() == [message]
    assert "BULKFLOW_LANDING_INTERVAL=2: must be at least 5 seconds" in message
    assert "BULKFLOW_TASK_RUNNER=spark: must be one of 'thread' or 'dask'" in message
    assert "DB_PORT=five: must be a whole number" in message


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["watch"],
        ["api"],
        ["db", "status"],
        ["db", "migrate"],
        ["db", "stop"],
        ["rejects", "x"],
        ["export", "users"],
        ["import", "users", "data/users.csv"],
    ],
)
def test_every_command_says_which_setting_is_wrong_in_one_line(
    clean_env: pytest.MonkeyPatch, command: list[str]
) -> None:
    clean_env.setenv("BULKFLOW_LANDING_INTERVAL", "2")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: BULKFLOW_LANDING_INTERVAL=2: must be at least 5 seconds"


def test_the_api_refuses_to_start_with_an_empty_token(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("API_TOKEN", "")
    result = CliRunner().invoke(app, ["api"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith("error: API_TOKEN is set but empty")
    with pytest.raises(ParameterError, match="API_TOKEN is set but empty"):
        create_app(Settings(_env_file=None, API_TOKEN=" "))
