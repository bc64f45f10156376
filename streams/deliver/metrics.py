"""Prometheus metrics of `segstream deliver`, per destination."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SENT = Counter(
    "segstream_deliveries_sent_total",
    "Webhook requests sent, retries included.",
    ["destination"],
)
DELIVERED = Counter(
    "segstream_deliveries_delivered_total",
    "Changes a destination acknowledged with a 2xx.",
    ["destination"],
)
RETRIED = Counter(
    "segstream_deliveries_retried_total",
    "Requests sent again after a connection error, a timeout, 408, 429 or 5xx.",
    ["destination"],
)
DEAD_LETTERED = Counter(
    "segstream_deliveries_dead_lettered_total",
    "Changes sent to the deliveries dead-letter topic, by the destination's last status.",
    ["destination", "status"],
)
IN_FLIGHT = Gauge(
    "segstream_deliveries_in_flight",
    "Requests waiting for a destination's answer.",
    ["destination"],
)
BACKLOG = Gauge(
    "segstream_deliveries_backlog_changes",
    "Changes on the change topic a destination's deliverers have not reached yet.",
    ["destination"],
)
LATENCY = Histogram(
    "segstream_delivery_latency_seconds",
    "From a change's processed_at to the destination's 2xx.",
    ["destination"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
)
