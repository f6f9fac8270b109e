"""The benchmark runs end to end on tiny sizes (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.comparison import BenchConfig
from bench.report import write
from bench.run import run


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.slow
def test_the_benchmark_runs_and_writes_its_results(tmp_path: Path, prefect_api: str) -> None:
    config = BenchConfig(
        rows=300,
        repeats=1,
        memory_rows=(200, 300),
        landing_files=2,
        uploads_at_once=(3, 6),
        workdir=tmp_path,
        results=tmp_path / "results",
        prefect_api_url=prefect_api,
    )
    summary = write(config, run(config))
    saved = json.loads((tmp_path / "results" / "results.json").read_text())
    workloads = [f"{c['kind']} {c['workload']}" for c in saved["comparisons"]]
    assert workloads[:14] == [
        "import users, 5% invalid",
        "import users",
        "import articles",
        "import comments",
        "import users, identical re-import",
        "import users, --mode replace of the same file",
        "import users, dry run of --mode replace of the same file",
        "import users, dry run",
        "import users, --atomic",
        "import users, ;-separated cp1252 (Excel) with a profile",
        "import users into the full table: half changed, half new",
        "import users, a tenth of the file",
        "landing 2 files of 1,000 users dropped under bulkflow serve",
        "import users, COPY (not bulkflow) into a table with the change column (default + index)",
    ]
    # and 12 exports: 3 resources x NDJSON, CSV from the CLI, the floor under them in a command
    # and connected, users through the API, incremental, a dataset
    assert len(workloads) == 26
    assert "export users ndjson through the API (curl)" in workloads
    floors = [c for c in saved["comparisons"] if "the driver's read alone" in c["workload"]]
    assert [c["reference"] for c in floors] == ["COPY (FORMAT csv)"] * 2
    in_command, connected = floors
    assert connected["copy_s"] == in_command["copy_s"]  # one COPY run is the reference of both
    assert 0 < connected["ours_s"][0] < in_command["ours_s"][0]  # the read is a part of the command
    assert workloads[-2:] == [
        "export users ndjson since a cursor through the API (curl), 1% of the rows changed",
        "export users as a Parquet dataset by created_at:day",
    ]
    for comparison in saved["comparisons"]:
        assert len(comparison["copy_s"]) == len(comparison["ours_s"]) == 1 and comparison["ratio"] > 0
        measured_by_others = ("(curl)", "(not bulkflow)")  # curl or psql waits, not a bulkflow process
        if comparison["kind"] != "landing" and not any(other in comparison["workload"] for other in measured_by_others):
            assert comparison["ours_peak_rss_mb"][0] > 50  # a real process was measured
    assert [point["rows"] for point in saved["memory"]] == [200, 300]
    assert saved["machine"]["postgres"].startswith("PostgreSQL ")
    table = (tmp_path / "results" / "results.md").read_text()
    assert (
        "| import users | 300 |" in table
        and "(against sequential bulkflow import) | 2,000 |" in table
        and "Peak memory" in table
        and "Fixed cost: a 10-row import" in table
    )
    assert "over the plain users file" in table and summary["partner_over_plain"] > 0
    assert [(sent["uploads"], sent["accepted"]) for sent in saved["api_uploads"]] == [(3, 3), (6, 6)]
    assert "API under load: 3 uploads" in table
    fixed = saved["fixed_cost"]
    assert fixed["ten_rows_s"] > 0 and fixed["import_prefect_s"] > 0 and fixed["floor_s"] > 0
    assert fixed["ratio"] == round(fixed["ten_rows_s"] / fixed["import_prefect_s"], 3)
    assert fixed["floor_ratio"] == round(fixed["floor_s"] / fixed["import_prefect_s"], 3)
    assert "The floor under it" in table
    assert summary["chart"] == (tmp_path / "results" / "chart.png").exists()
