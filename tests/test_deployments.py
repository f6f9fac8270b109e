"""Deployments, the prefect.yaml of `bulkflow deploy`, docker-compose, Dockerfile and .env.example agree with the code.

No Docker engine runs here: the files are parsed and checked against the settings model and
the deployments catalog, so a renamed setting or flow cannot leave them stale."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.schedules import CronSchedule

from bulkflow.settings import Settings
from deployments.catalog import WORK_POOL, all_deployments, prefect_yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_ONLY = {"DB_PUBLISH_PORT"}
"""Variables only docker compose reads (where the host reaches a service), not settings."""


def setting_names() -> set[str]:
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        names.update([alias] if isinstance(alias, str) else [str(choice) for choice in alias.choices])  # type: ignore[union-attr]  # every field has an alias
    return names


def test_the_catalog_declares_the_four_deployments_with_forms_and_schedules() -> None:
    deployments = {f"{d.flow_name}/{d.name}": d for d in all_deployments(Settings())}
    assert set(deployments) == {
        "import/import",
        "export/export",
        "nightly-export/nightly-parquet",
        "landing-pickup/landing",
    }
    form = deployments["import/import"]._parameter_openapi_schema.model_dump()
    assert form["properties"]["resource"]["enum"] == ["users", "articles", "comments"]
    options = {"chunk_size", "idempotency_key", "source_name", "mode", "dry_run", "atomic", "max_rejects"}
    options |= {"max_reject_rate", "budget_min_rows", "on_budget", "budget_pause_timeout", "cascade", "rejects_of"}
    options |= {"profile", "delimiter", "quote", "escape", "encoding", "map", "null_values", "true_values"}
    options |= {"false_values", "timestamp_format", "timezone", "on_drift"}
    assert set(form["definitions"]["ImportOptions"]["properties"]) == options
    export_form = deployments["export/export"]._parameter_openapi_schema.model_dump()
    assert {"role", "status", "created_at_from", "updated_since"} <= set(
        export_form["definitions"]["ExportFilters"]["properties"]
    )
    assert not deployments["landing-pickup/landing"].schedules  # the landing watcher starts it when files wait
    nightly = deployments["nightly-export/nightly-parquet"].schedules
    assert nightly and isinstance(nightly[0].schedule, CronSchedule) and nightly[0].schedule.cron == "0 2 * * *"
    for name, deployment in deployments.items():  # the run form explains every field
        for parameter, spec in deployment._parameter_openapi_schema.model_dump()["properties"].items():
            assert spec.get("description"), (name, parameter)


def test_the_prefect_yaml_of_bulkflow_deploy_declares_what_serve_serves() -> None:
    """`bulkflow deploy` writes the catalog as a prefect.yaml: each entry is the served
    deployment (the entrypoint Prefect finds for the flow, tags, parameters, schedule from
    the settings), on the work pool, run from the repository."""
    settings = Settings(BULKFLOW_NIGHTLY_CRON="30 3 * * 1-5")
    written = yaml.safe_load(yaml.safe_dump(prefect_yaml(settings, ROOT)))
    assert written["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    declared = {d["name"]: d for d in written["deployments"]}
    for deployment in all_deployments(settings):
        entry = declared.pop(deployment.name)
        assert entry["entrypoint"] == deployment.entrypoint
        assert entry["work_pool"]["name"] == WORK_POOL and entry["tags"] == deployment.tags
        assert entry["description"] == deployment.description
        assert entry["parameters"] == deployment.parameters
        schedules = [s.schedule for s in deployment.schedules or []]
        assert [s["cron"] for s in entry["schedules"]] == [s.cron for s in schedules if isinstance(s, CronSchedule)]
        assert len(entry["schedules"]) == len(schedules)
    assert declared == {}
    assert "30 3 * * 1-5" in str(written)


def test_compose_runs_postgres_prefect_the_runner_and_the_api() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "prefect", "runner", "api"}
    assert services["runner"]["command"] == ["bulkflow", "serve"]
    assert services["api"]["command"][:2] == ["bulkflow", "api"] and "3000" in services["api"]["ports"][0]
    for name in ("runner", "api"):
        environment = services[name]["environment"]
        assert environment["DB_HOST"] == "postgres" and environment["PREFECT_API_URL"] == "http://prefect:4200/api"
        assert "bulkflow-data:/data" in services[name]["volumes"] and environment["BULKFLOW_HOME"] == "/data"
    assert "@postgres:5432/prefect" in services["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    init = services["postgres"]["volumes"][1].split(":")[0]
    assert "CREATE DATABASE prefect" in (ROOT / init).read_text()
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    assert used <= setting_names() | COMPOSE_ONLY, used - setting_names()


def test_compose_services_connect_inside_the_network_whatever_port_the_host_publishes() -> None:
    """DB_PORT=5433 in .env (a local PostgreSQL took 5432) must not send the services to
    postgres:5433: the published port is DB_PUBLISH_PORT, the service port is fixed."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["postgres"]["ports"] == ["${DB_PUBLISH_PORT:-5432}:5432"]
    for name in ("runner", "api"):
        service = services[name]
        assert service["environment"]["DB_PORT"] == "5432"  # compose's environment wins over env_file
        assert service["env_file"] == [{"path": ".env", "required": False}]  # compose works without a .env
        assert "healthcheck" in service, name


def test_env_example_copied_to_env_changes_nothing(clean_settings_env: None) -> None:
    """`cp .env.example .env` keeps the embedded database and every default."""
    from_example = Settings(_env_file=ROOT / ".env.example")
    assert from_example.embedded
    assert from_example.model_dump() == Settings(_env_file=None).model_dump()
    live = [
        line for line in (ROOT / ".env.example").read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert live == []


def test_env_example_holds_the_seed_fields_and_only_known_settings() -> None:
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert {"DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD", "PORT", "API_TOKEN"} <= names
    unknown = {n for n in names - setting_names() - COMPOSE_ONLY if not n.startswith("PREFECT_")}
    assert not unknown, f".env.example names settings that do not exist: {unknown}"


@pytest.fixture()
def clean_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)


def test_the_image_contains_every_package_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"][
        "packages"
    ]
    for package in packages:
        assert f"COPY {package} ./{package}" in dockerfile
    assert "USER bulkflow" in dockerfile and "BULKFLOW_HOME=/data" in dockerfile
