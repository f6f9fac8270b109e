"""Prefect deployments (declarative). Empty for now: the import flow runs locally through the
CLI (`bulkflow import`) or as a plain Prefect flow (`flows.import_flow:import_flow`). Served
deployments, schedules and the landing-folder pick-up arrive with the deployments issue."""
