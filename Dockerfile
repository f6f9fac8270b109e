# One image for every bulkflow service: the deployments runner (`bulkflow serve`), the /v1 API
# (`bulkflow api`), and one-off commands (`docker compose run --rm runner bulkflow import ...`).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    BULKFLOW_HOME=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY bulkflow ./bulkflow
COPY decisions ./decisions
COPY files ./files
COPY tasks ./tasks
COPY flows ./flows
COPY deployments ./deployments
COPY api ./api
COPY cli ./cli
COPY bench ./bench
COPY data ./data
# Editable, so the commands run the flows from /app (`bulkflow deploy`: workers find the code there) and find data/ (`bulkflow demo`).
RUN pip install -e '.[s3,dask]' && useradd --create-home --uid 10001 bulkflow && mkdir -p /data && chown bulkflow /data
USER bulkflow

EXPOSE 3000
CMD ["bulkflow", "api", "--host", "0.0.0.0"]
