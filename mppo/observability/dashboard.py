"""The MPPO overview dashboard for Grafana, built with grafana-foundation-sdk.

``scripts/gen_dashboard.py`` writes it to :data:`DASHBOARD_FILE` (committed; import it into
Grafana with a Prometheus data source); ``--check`` and a test fail when the committed JSON
is not what this code generates. Every query is per ``service`` (and ``instance``, one per
replica) through the dashboard's variables; the metric names are those of
mppo/platform/metrics.py and the services' observability modules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import (
    Dashboard as DashboardBuilder,
)
from grafana_foundation_sdk.builders.dashboard import (
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DASHBOARD_FILE = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "mppo-overview.json"
UID = "mppo-overview"

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: every query's selector: the chosen services and instances (replicas)
SEL = 'job="mppo", service=~"$service", instance=~"$instance"'
RATE = "$__rate_interval"
SERVER_ERRORS = "INTERNAL|UNKNOWN|DATA_LOSS|UNAVAILABLE"


def _query(expr: str, legend: str) -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def _series(
    title: str, description: str, unit: str, *queries: tuple[str, str], width: int = 8
) -> Timeseries:
    panel = (
        Timeseries()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(8)
        .span(width)
        .min(0)
    )
    for expr, legend in queries:
        panel = panel.with_target(_query(expr, legend))
    return panel


def _stat(title: str, description: str, unit: str, expr: str, width: int = 6) -> Stat:
    panel: Stat = (
        Stat()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .height(4)
        .span(width)
        .with_target(_query(expr, title))
    )
    return panel


def _quantile(q: float, metric: str, by: str, selector: str = SEL) -> str:
    return (
        f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[{RATE}])))"
    )


def build() -> DashboardBuilder:
    """The dashboard, row by row."""
    dashboard = (
        DashboardBuilder("MPPO overview")
        .uid(UID)
        .description(
            "Checkouts, REST and RPC traffic (RED), events (outbox, consumers, dead letters), "
            "payment holds, the order saga and retention, per service and replica."
        )
        .tags(["mppo", "generated"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("utc")
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            QueryVariable("service")
            .label("Service")
            .datasource(DATASOURCE)
            .query('label_values(up{job="mppo"}, service)')
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(
            QueryVariable("instance")
            .label("Instance")
            .datasource(DATASOURCE)
            .query('label_values(up{job="mppo", service=~"$service"}, instance)')
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )

    dashboard = (
        dashboard.with_row(Row("Checkouts"))
        .with_panel(
            _stat(
                "Checkouts confirmed (1 h)",
                "Groups whose order was confirmed in the last hour (group service).",
                "short",
                "sum(increase(mppo_checkout_duration_seconds_count"
                f'{{{SEL}, outcome="confirmed"}}[1h]))',
            )
        )
        .with_panel(
            _stat(
                "Checkouts failed (1 h)",
                "Groups whose order failed in the last hour (compensated: nothing kept).",
                "short",
                "sum(increase(mppo_checkout_duration_seconds_count"
                f'{{{SEL}, outcome="failed"}}[1h]))',
            )
        )
        .with_panel(
            _stat(
                "Money held (holds)",
                "Payments authorized and neither captured nor released (payment service).",
                "short",
                f"max(mppo_payment_holds_outstanding{{{SEL}}})",
            )
        )
        .with_panel(
            _stat(
                "Dead letters",
                "Events the consumers gave up on, waiting for an operator (they never expire).",
                "short",
                f"sum(max by (consumer) (mppo_dead_letter_messages{{{SEL}}}))",
            )
        )
        .with_panel(
            _series(
                "Checkout latency",
                "Group creation to the order's outcome, by quantile (group service).",
                "s",
                (_quantile(0.5, "mppo_checkout_duration_seconds", "outcome"), "p50 {{outcome}}"),
                (_quantile(0.95, "mppo_checkout_duration_seconds", "outcome"), "p95 {{outcome}}"),
                width=12,
            )
        )
        .with_panel(
            _series(
                "Checkouts",
                "Checkouts finishing per second, by outcome.",
                "ops",
                (
                    "sum by (outcome) (rate(mppo_checkout_duration_seconds_count"
                    f"{{{SEL}}}[{RATE}]))",
                    "{{outcome}}",
                ),
                width=12,
            )
        )
    )

    dashboard = (
        dashboard.with_row(Row("REST (gateway)"))
        .with_panel(
            _series(
                "Requests by route",
                "REST requests per second, by route template.",
                "reqps",
                (
                    f"sum by (route, method) (rate(mppo_http_requests_total{{{SEL}}}[{RATE}]))",
                    "{{method}} {{route}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Errors by status",
                "4xx and 5xx answers per second (alert MppoHttp5xxRate: over 5% 5xx).",
                "reqps",
                (
                    "sum by (status) (rate(mppo_http_requests_total"
                    f'{{{SEL}, status=~"[45].."}}[{RATE}]))',
                    "{{status}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Latency p95 by route",
                "95th percentile of the gateway's answer time, by route.",
                "s",
                (_quantile(0.95, "mppo_http_request_duration_seconds", "route"), "{{route}}"),
            )
        )
    )

    dashboard = (
        dashboard.with_row(Row("RPCs (services)"))
        .with_panel(
            _series(
                "RPCs by service",
                "RPCs completed per second by each service.",
                "ops",
                (
                    f"sum by (service) (rate(grpc_server_handled_total{{{SEL}}}[{RATE}]))",
                    "{{service}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Server errors",
                "RPCs ending INTERNAL, UNKNOWN, DATA_LOSS or UNAVAILABLE per second "
                "(alert MppoGrpcServerErrorRate).",
                "ops",
                (
                    "sum by (service, grpc_code) (rate(grpc_server_handled_total"
                    f'{{{SEL}, grpc_code=~"{SERVER_ERRORS}"}}[{RATE}]))',
                    "{{service}} {{grpc_code}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Latency p95 by method",
                "95th percentile of handling time, by RPC method.",
                "s",
                (
                    _quantile(0.95, "grpc_server_handling_seconds", "service, grpc_method"),
                    "{{service}} {{grpc_method}}",
                ),
            )
        )
    )

    dashboard = (
        dashboard.with_row(Row("Events"))
        .with_panel(
            _series(
                "Outbox backlog",
                "Events committed and not yet published, per service database.",
                "short",
                (f"max by (service) (mppo_outbox_backlog_events{{{SEL}}})", "{{service}}"),
            )
        )
        .with_panel(
            _series(
                "Oldest unpublished event",
                "Age of the oldest outbox event waiting (alert MppoOutboxLag: over 60 s).",
                "s",
                (f"max by (service) (mppo_outbox_oldest_age_seconds{{{SEL}}})", "{{service}}"),
            )
        )
        .with_panel(
            _series(
                "Consumer lag",
                "Messages in the stream not yet delivered, per durable consumer "
                "(alert MppoConsumerLag).",
                "short",
                (f"max by (consumer) (mppo_consumer_pending_messages{{{SEL}}})", "{{consumer}}"),
            )
        )
        .with_panel(
            _series(
                "Events applied",
                "Events taken from the consumers per second, by outcome.",
                "ops",
                (
                    f"sum by (outcome) (rate(mppo_consumer_events_total{{{SEL}}}[{RATE}]))",
                    "{{outcome}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Redeliveries",
                "Deliveries of a message a consumer had already been given, per second.",
                "ops",
                (
                    f"sum by (consumer) (rate(mppo_consumer_redeliveries_total{{{SEL}}}[{RATE}]))",
                    "{{consumer}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Dead letters by consumer",
                "Messages the dead-letter stream holds from each consumer "
                "(alert MppoDeadLettersPresent).",
                "short",
                (f"max by (consumer) (mppo_dead_letter_messages{{{SEL}}})", "{{consumer}}"),
            )
        )
    )

    dashboard = (
        dashboard.with_row(Row("Payments"))
        .with_panel(
            _series(
                "Holds outstanding",
                "Payments authorized and neither captured nor released.",
                "short",
                (f"max(mppo_payment_holds_outstanding{{{SEL}}})", "holds"),
            )
        )
        .with_panel(
            _series(
                "Hold age and expiry",
                "How long the oldest hold has been held, and how long until the first one "
                "lapses (alert MppoHoldNearExpiry: within 6 h).",
                "s",
                (f"max(mppo_payment_oldest_hold_age_seconds{{{SEL}}})", "oldest hold"),
                (f"min(mppo_payment_hold_soonest_expiry_seconds{{{SEL}}})", "soonest expiry"),
            )
        )
        .with_panel(
            _series(
                "Webhook verification failures",
                "Provider webhooks refused per second (alert MppoWebhookSignatureFailures).",
                "ops",
                (
                    "sum by (provider) (rate(mppo_payment_webhook_verification_failures_total"
                    f"{{{SEL}}}[{RATE}]))",
                    "{{provider}}",
                ),
            )
        )
    )

    dashboard = (
        dashboard.with_row(Row("Order saga"))
        .with_panel(
            _series(
                "Step latency p95",
                "95th percentile of each saga step (its external call and its commit).",
                "s",
                (_quantile(0.95, "mppo_order_saga_step_duration_seconds", "step"), "{{step}}"),
                width=12,
            )
        )
        .with_panel(
            _series(
                "Steps and outcomes",
                "Saga steps per second by outcome (retry: transient, tried again).",
                "ops",
                (
                    "sum by (step, outcome) (rate(mppo_order_saga_step_duration_seconds_count"
                    f"{{{SEL}}}[{RATE}]))",
                    "{{step}} {{outcome}}",
                ),
                width=12,
            )
        )
    )

    dashboard = (
        dashboard.with_row(Row("Retention and processes"))
        .with_panel(
            _series(
                "Rows pruned",
                "Rows the pruners delete per second, by table.",
                "ops",
                (
                    "sum by (service, table) (rate(mppo_retention_rows_pruned_total"
                    f"{{{SEL}}}[{RATE}]))",
                    "{{service}} {{table}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Stream fill",
                "Bytes each stream holds over its byte limit (alert MppoStreamNearFull: 80%).",
                "percentunit",
                (
                    f"max by (stream) (mppo_stream_bytes{{{SEL}}}"
                    f" / (mppo_stream_max_bytes{{{SEL}}} > 0))",
                    "{{stream}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Platform table size",
                "On-disk size of the pruned tables (outbox, inbox, idempotency keys, ...).",
                "bytes",
                (
                    f"max by (service, table) (mppo_retention_table_bytes{{{SEL}}})",
                    "{{service}} {{table}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Processes up",
                "1 per process scraped (alert MppoTargetDown).",
                "short",
                (f"sum by (service) (up{{{SEL}}})", "{{service}}"),
            )
        )
        .with_panel(
            _series(
                "CPU",
                "CPU seconds per second of each process.",
                "percentunit",
                (
                    f"sum by (service, instance) (rate(process_cpu_seconds_total{{{SEL}}}"
                    f"[{RATE}]))",
                    "{{service}} {{instance}}",
                ),
            )
        )
        .with_panel(
            _series(
                "Memory",
                "Resident memory of each process.",
                "bytes",
                (
                    f"max by (service, instance) (process_resident_memory_bytes{{{SEL}}})",
                    "{{service}} {{instance}}",
                ),
            )
        )
    )
    return dashboard


def render() -> str:
    """The dashboard as the committed JSON text (stable: sorted keys, two-space indent)."""
    built: Any = build().build()
    encoded = JSONEncoder(sort_keys=True, indent=2).encode(built)
    return json.dumps(json.loads(encoded), sort_keys=True, indent=2) + "\n"
