"""Prometheus metrics, read at scrape time from where the truth lives: job states from Prefect,
row counts and durations from the bookkeeping tables. Any process may serve them, and they
survive restarts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from api.jobs import STATES_OF_STATUS
from bulkflow.db import connect
from bulkflow.settings import Settings

_KINDS = ("import", "export", "landing-pickup", "nightly-export")


class BulkflowCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from self._rows()

    def _jobs(self) -> Iterator[Metric]:
        started = CounterMetricFamily("bulkflow_jobs_started", "Flow runs created, by kind", labels=["kind"])
        finished = CounterMetricFamily(
            "bulkflow_jobs_finished", "Flow runs finished, by kind and status", labels=["kind", "status"]
        )
        active = GaugeMetricFamily("bulkflow_jobs_active", "Flow runs queued or running", labels=["kind", "status"])
        now = datetime.now(UTC)
        ran = FlowRunFilter(start_time=FlowRunFilterStartTime(is_null_=False))
        with get_client(sync_client=True) as client:
            for kind in _KINDS:
                by_flow = FlowFilter(name=FlowFilterName(any_=[kind]))
                started.add_metric([kind], client.count_flow_runs(flow_filter=by_flow, flow_run_filter=ran))
                for status, states in STATES_OF_STATUS.items():
                    in_status = FlowRunFilter(
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
                        # Schedules create runs ahead of time: those are not queued yet.
                        # Prefect's stub names its own DateTime alias; any aware datetime is accepted.
                        expected_start_time=FlowRunFilterExpectedStartTime(before_=now),  # type: ignore[arg-type]  # see the comment above
                    )
                    count = client.count_flow_runs(flow_filter=by_flow, flow_run_filter=in_status)
                    (active if status in ("queued", "running") else finished).add_metric([kind, status], count)
        yield from (started, finished, active)

    def _rows(self) -> Iterator[Metric]:
        imported = CounterMetricFamily(
            "bulkflow_rows_imported", "Rows inserted, updated or unchanged (accepted)", labels=["resource"]
        )
        rejected = CounterMetricFamily("bulkflow_rows_rejected", "Rows rejected by imports", labels=["resource"])
        exported = CounterMetricFamily("bulkflow_rows_exported", "Rows written by export jobs", labels=["resource"])
        import_time = SummaryMetricFamily(
            "bulkflow_import_duration_seconds", "Finished import jobs, wall time", labels=["resource"]
        )
        export_time = SummaryMetricFamily(
            "bulkflow_export_duration_seconds", "Finished export jobs", labels=["resource"]
        )
        with connect(self.settings) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT j.resource, coalesce(sum(c.inserted + c.updated + c.unchanged), 0), coalesce(sum(c.rejected), 0) "
                "FROM import_jobs j JOIN import_chunks c USING (job_key) GROUP BY j.resource"
            )
            for resource, loaded, bad in cur.fetchall():
                imported.add_metric([resource], loaded)
                rejected.add_metric([resource], bad)
            cur.execute(
                "SELECT resource, count(*), coalesce(sum(extract(epoch FROM finished_at - created_at)), 0)::float8 "
                "FROM import_jobs WHERE finished_at IS NOT NULL GROUP BY resource"
            )
            for resource, count, seconds in cur.fetchall():
                import_time.add_metric([resource], count_value=count, sum_value=seconds)
            cur.execute(
                "SELECT resource, count(*), coalesce(sum(rows), 0), coalesce(sum(duration_s), 0)::float8 "
                "FROM export_jobs WHERE finished_at IS NOT NULL GROUP BY resource"
            )
            for resource, count, rows, seconds in cur.fetchall():
                exported.add_metric([resource], rows)
                export_time.add_metric([resource], count_value=count, sum_value=seconds)
        yield from (imported, rejected, exported, import_time, export_time)
