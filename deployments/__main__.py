"""`python -m deployments`: serve every deployment (the same as `bulkflow serve`)."""

from prefect import serve

from bulkflow.settings import Settings
from deployments.catalog import all_deployments

if __name__ == "__main__":
    serve(*all_deployments(Settings()))
