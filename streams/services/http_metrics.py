"""Request metrics for segstream's HTTP services (collector, read API).

>>> metrics = RequestMetrics("segstream_example")
>>> metrics.observe("/v1/track", 200, 0.004)
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class RequestMetrics:
    """`<prefix>_requests_total{endpoint,code}`, `<prefix>_request_duration_seconds{endpoint}`."""

    def __init__(self, prefix: str) -> None:
        self.requests = Counter(
            f"{prefix}_requests_total",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "code"],
        )
        self.duration = Histogram(
            f"{prefix}_request_duration_seconds",
            "Time from a request's arrival to its answer, by endpoint.",
            ["endpoint"],
            buckets=_LATENCY,
        )

        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        """Each endpoint's and code's series, found once (label values are few and bounded)."""

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        """Count one answered request."""
        children = self._children.get((endpoint, code))
        if children is None:
            children = (
                self.requests.labels(endpoint=endpoint, code=str(code)),
                self.duration.labels(endpoint=endpoint),
            )
            self._children[endpoint, code] = children
        children[0].inc()
        children[1].observe(seconds)


def service_app(title: str, summary: str, metrics: RequestMetrics, **options: Any) -> FastAPI:
    """A FastAPI app of segstream's, without interactive docs, its requests timed and counted
    into `metrics`; `options` go to FastAPI (a `lifespan`, for example)."""
    app = FastAPI(
        title=title, version="1", summary=summary, docs_url=None, redoc_url=None, **options
    )
    app.add_middleware(TimedRoutes, metrics=metrics)
    return app


class TimedRoutes:
    """Pure ASGI middleware: times and counts every HTTP request by its route's path
    template (bounded label values), into `metrics`."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on; observe its status and duration when it is answered."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = str(getattr(scope.get("route"), "path", "other"))
            self.metrics.observe(endpoint, status[0], time.perf_counter() - started)
