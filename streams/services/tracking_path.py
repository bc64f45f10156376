"""The collector's tracking calls, answered without FastAPI's routing and validation.

A tracking call is the collector's hot path: a browser sends one request per event. The
route itself does little (read the body, check the key, decode, produce, wait for the
ack), and FastAPI's request-response machinery around it (route matching, dependency
solving, response-model serialization) cost more than that: about as much again, by a
profile of one collector process taking single `/v1/t` calls. This pure ASGI middleware
answers `POST` on the tracking paths itself, with the same `take` the routes call, and
passes everything else on. The routes stay registered, so the OpenAPI document still
describes them; answers, headers and metrics are the same (it sits inside the CORS
middleware, and counts each request under its path, as the route template would).

    app.add_middleware(TrackingPath, calls={"/v1/t": "track"}, take=answer, metrics=REQUESTS)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

import orjson
from fastapi import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from streams.services.http_metrics import RequestMetrics
from streams.services.tracking_schema import Accepted

_ACCEPTED = orjson.dumps(Accepted().model_dump())
_HEADERS = [
    (b"content-length", str(len(_ACCEPTED)).encode()),
    (b"content-type", b"application/json"),
]


class TrackingPath:
    """Answers `POST` on the paths of `calls` (path -> call type) with `take`: the
    refusal it returns, or when it returns `None` the 200 of an accepted call; counts
    each request into `metrics`."""

    def __init__(
        self,
        app: ASGIApp,
        calls: Mapping[str, str],
        take: Callable[[Request, str], Awaitable[Response | None]],
        metrics: RequestMetrics,
    ) -> None:
        self.app = app
        self.calls = dict(calls)
        self.take = take
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a tracking call, or pass the request on."""
        call = self.calls.get(scope["path"]) if scope["type"] == "http" else None
        if call is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope, receive)
        status = 500
        try:
            refusal = await self.take(request, call)
            if refusal is not None:
                status = refusal.status_code
                await refusal(scope, receive, send)
                return
            status = 200
            await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": _ACCEPTED})
        finally:
            self.metrics.observe(scope["path"], status, time.perf_counter() - started)
