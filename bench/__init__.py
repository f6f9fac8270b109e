"""The benchmark: bulkflow side by side with PostgreSQL's own COPY, in one run.

`make bench` (or `bulkflow bench`) generates the data with the project's generator, then
alternates raw `psql \\copy` / `COPY ... TO STDOUT` with the `bulkflow` command on the same
files and tables, and writes a JSON file, a markdown table and a chart to `bench/results/`.
"""
