"""The deployment names, `<flow name>/<deployment name>` as `run_deployment` and
`create_flow_run_from_deployment` address them. Apart from the catalog so that flows and the
API can start runs without importing every flow."""

IMPORT = "import/import"
EXPORT = "export/export"
NIGHTLY = "nightly-export/nightly-parquet"
LANDING = "landing-pickup/landing"
