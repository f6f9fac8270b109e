"""The file room: where a file comes from and how it is read or written; no decisions.

- `formats`: the formats, told from a name or given; how a run names its file.
- `remote`, `storage`: URLs (http(s), s3:// through fsspec), their checks and limits.
- `staging`: a source made a local, uncompressed, UTF-8-checked file, and its checksum;
  `jsonarray` (a JSON array streamed to NDJSON) and `quotes` (the RFC 4180 quote walk) help it.
- `columns`: the columns a staged file has, checked against a resource's.
- `records`, `read`, `spans`: records cut from bytes, read in chunks of text rows
  (`schemas.frames.RowsRead`), or one chunk alone from its byte span (Dask workers).
- `writers`: export files written batch by batch (CSV, NDJSON, JSON, Parquet).
- `generate`: synthetic files for the demo, the tests and the benchmark.
"""
