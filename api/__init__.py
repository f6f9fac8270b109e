"""The /v1 HTTP API: a thin gateway over the same flows (it triggers the deployments in
`deployments.catalog` and reads what the flows record). `bulkflow api` serves it."""
