"""Writing a benchmark run down: JSON (everything), a markdown table, a PNG chart."""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.comparison import BenchConfig, Comparison
from bench.run import PARTNER_WORKLOAD


def machine(postgres: str) -> dict[str, Any]:
    """The facts the numbers depend on."""
    cpu = next((line.split(":", 1)[1].strip() for line in _lines("/proc/cpuinfo") if line.startswith("model name")), "")
    mem_kb = next((int(line.split()[1]) for line in _lines("/proc/meminfo") if line.startswith("MemTotal")), 0)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 2**20, 1),
        "postgres": f"PostgreSQL {postgres}",
        "python": platform.python_version(),
    }


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def summarise(config: BenchConfig, outcome: dict[str, Any]) -> dict[str, Any]:
    comparisons: list[Comparison] = outcome["comparisons"]
    memory = outcome["memory"]
    by_rows = {point["rows"]: point["peak_rss_mb"] for point in memory}
    per_row = {point["rows"]: point["ours_s"] / point["rows"] for point in memory}
    largest = max(by_rows)
    fixed = outcome["fixed_cost"]
    return {
        "machine": machine(outcome["postgres"]),
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(config).items()
            if k != "prefect_database_url"  # it may hold a password
        },
        "prefect_database": _prefect_database(config),
        "comparisons": [
            asdict(c)
            | {
                "copy_median_s": round(statistics.median(c.copy_s), 3),
                "ours_median_s": round(statistics.median(c.ours_s), 3),
                "ratio": round(c.ratio, 3),
                "met": None if c.target is None else c.ratio >= c.target,
            }
            for c in comparisons
        ],
        "memory": memory,
        "memory_growth": _memory_growth(by_rows),
        "time_per_row_growth": round(per_row[largest] / per_row[1_000_000], 3) if 1_000_000 in per_row else None,
        "fixed_cost": fixed
        | {
            "ratio": round(fixed["ten_rows_s"] / fixed["import_prefect_s"], 3),
            "floor_ratio": round(fixed["floor_s"] / fixed["import_prefect_s"], 3),
        },
        "partner_over_plain": _partner_over_plain(comparisons),
        "api_uploads": outcome.get("api_uploads", []),
    }


def _prefect_database(config: BenchConfig) -> str:
    """What the Prefect server the commands talk to stores its runs in."""
    if config.prefect_api_url:
        return f"the server at {config.prefect_api_url}"
    if config.prefect_database_url:
        return config.prefect_database_url.split(":", 1)[0].split("+", 1)[0]
    return "sqlite"


def _memory_growth(by_rows: dict[int, float]) -> list[dict[str, float]]:
    """Peak RSS of each tenfold step from 100k rows up (1M over 100k, 10M over 1M): the
    issue's yardstick, each within 1.25x."""
    steps = sorted(rows for rows in by_rows if rows > 100_000 and rows // 10 in by_rows)
    return [
        {"rows": rows, "over_rows": rows // 10, "ratio": round(by_rows[rows] / by_rows[rows // 10], 3)}
        for rows in steps
    ]


def _partner_over_plain(comparisons: list[Comparison]) -> float | None:
    """The partner-shaped users file's time over the plain file's (medians of our side)."""
    by_workload = {c.workload: statistics.median(c.ours_s) for c in comparisons if c.kind == "import"}
    if PARTNER_WORKLOAD not in by_workload or "users" not in by_workload:
        return None
    return round(by_workload[PARTNER_WORKLOAD] / by_workload["users"], 3)


def markdown(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['postgres']} on the same machine; "
        f"Python {m['python']}; {m['date']}. Medians of {summary['config']['repeats']} alternating runs. "
        "bulkflow = the whole `bulkflow` command (Python start-up included) against a running Prefect server "
        f"(its database: {summary.get('prefect_database', 'sqlite')}); "
        "ratio = bulkflow throughput / the reference's (COPY unless said).",
        "",
        "| workload | rows | reference (s) | bulkflow (s) | ratio | target | bulkflow peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in summary["comparisons"]:
        target = "–" if c["target"] is None else f"≥ {c['target']:.2f}x {'✅' if c['met'] else '❌'}"
        peak = f"{max(c['ours_peak_rss_mb']):.0f}" if c["ours_peak_rss_mb"] else "–"
        reference = "" if c["reference"] == "COPY" else f" (against {c['reference']})"
        lines.append(
            f"| {c['kind']} {c['workload']}{reference} | {c['rows']:,} | {c['copy_median_s']:.2f} "
            f"| {c['ours_median_s']:.2f} | {c['ratio']:.2f}x | {target} | {peak} |"
        )
    lines += ["", "| users import, rows | peak RSS (MB) | bulkflow rows/s | COPY rows/s |", "|---:|---:|---:|---:|"]
    for point in summary["memory"]:
        lines.append(
            f"| {point['rows']:,} | {point['peak_rss_mb']:.0f} | {point['rows'] / point['ours_s']:,.0f} "
            f"| {point['rows'] / point['copy_s']:,.0f} |"
        )
    largest = max(point["rows"] for point in summary["memory"])
    lines.append("")
    for step in summary["memory_growth"]:
        lines.append(
            f"- Peak memory, {step['rows']:,} rows over {step['over_rows']:,}: {step['ratio']:.2f}x (target ≤ 1.25x)."
        )
    peak = max(point["peak_rss_mb"] for point in summary["memory"])
    lines.append(f"- Peak memory at {largest:,} rows: {peak:.0f} MB (target under 500 MB).")
    if summary["time_per_row_growth"] is not None:
        lines.append(
            f"- Time per row, {largest:,} rows over 1,000,000: {summary['time_per_row_growth']:.2f}x (target ≤ 1.15x)."
        )
    if summary.get("partner_over_plain") is not None:
        lines.append(
            f"Partner file ({PARTNER_WORKLOAD.removeprefix('users, ')}) over the plain users file: "
            f"{summary['partner_over_plain']:.2f}x the time (target ≤ 1.25x)."
        )
    for sent in summary.get("api_uploads", []):
        lines.append(
            f"API under load: {sent['uploads']} uploads of 1,000 users sent at once, {sent['accepted']} accepted (202), "
            f"all answered in {sent['seconds']:.2f} s (target: all accepted; 20 within 2 s)."
        )
    fixed = summary["fixed_cost"]
    lines.append(
        f'Fixed cost: a 10-row import {fixed["ten_rows_s"]:.2f} s, `python -c "import prefect"` '
        f"{fixed['import_prefect_s']:.2f} s: {fixed['ratio']:.2f}x (target ≤ 1.5x). The floor under it "
        f"(`python -m bench.floor`: the same libraries, one empty flow run, one connection) "
        f"{fixed['floor_s']:.2f} s: {fixed['floor_ratio']:.2f}x."
    )
    return "\n".join(lines) + "\n"


def chart(summary: dict[str, Any], path: Path) -> bool:
    """Throughput and peak memory against row count, and every ratio; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    memory = summary["memory"]
    rows = [p["rows"] for p in memory]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.8))
    left.plot(rows, [r / p["ours_s"] for r, p in zip(rows, memory)], "o-", label="bulkflow import")
    left.plot(rows, [r / p["copy_s"] for r, p in zip(rows, memory)], "s--", label="psql \\copy")
    left.set(xscale="log", xlabel="rows (users)", ylabel="rows/s", title="Import throughput")
    left.legend()
    middle.plot(rows, [p["peak_rss_mb"] for p in memory], "o-", color="tab:red")
    middle.axhline(500, color="grey", linestyle=":", label="500 MB")
    middle.set(
        xscale="log", xlabel="rows (users)", ylabel="peak RSS (MB)", title="bulkflow import peak memory", ylim=(0, 600)
    )
    middle.legend()
    names = [f"{c['kind']}\n{c['workload']}" for c in summary["comparisons"]]
    ratios = [c["ratio"] for c in summary["comparisons"]]
    colours = [
        "tab:green" if c["met"] else ("tab:grey" if c["met"] is None else "tab:orange") for c in summary["comparisons"]
    ]
    right.barh(names, ratios, color=colours)
    right.axvline(1.0, color="black", linewidth=0.8)
    right.set(xlabel="bulkflow / COPY throughput", title="Ratios (green: target met)")
    right.invert_yaxis()
    right.tick_params(axis="y", labelsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write(config: BenchConfig, outcome: dict[str, Any]) -> dict[str, Any]:
    """Write results.json, results.md and chart.png into `config.results`; return the summary."""
    summary = summarise(config, outcome)
    config.results.mkdir(parents=True, exist_ok=True)
    (config.results / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (config.results / "results.md").write_text(markdown(summary))
    summary["chart"] = chart(summary, config.results / "chart.png")
    return summary
