"""Request metrics for segstream's HTTP services (collector, read API).

>>> metrics = RequestMetrics("segstream_example")
>>> metrics.observe("/v1/track", 200, 0.004)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

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

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(endpoint=endpoint, code=str(code)).inc()
        self.duration.labels(endpoint=endpoint).observe(seconds)

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Starlette HTTP middleware: time and count every request by its route's path."""
        started = time.perf_counter()
        response = await call_next(request)
        self.observe(_endpoint(request), response.status_code, time.perf_counter() - started)
        return response


def _endpoint(request: Request) -> str:
    """The route template the request matched (bounded label values), or `other`."""
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "other"))
    return "other"
