"""The collector: Segment's HTTP Tracking API in front of the events topic.

It takes what Segment's and RudderStack's SDKs send, unchanged, from servers,
apps and browsers on other origins:

- `POST /v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`, `/v1/alias`,
  `/v1/group`, `/v1/batch` and `/v1/import`; the short paths of Segment's
  browser SDK (`/v1/t`, `/v1/p`, `/v1/s`, `/v1/i`, `/v1/a`, `/v1/g`, `/v1/b`)
  and RudderStack's beacon path (`/beacon/v1/batch`). Bodies are JSON whatever
  their `Content-Type` (browser SDKs send `text/plain`), optionally gzip-encoded.
  The write key is the basic-auth user, a `writeKey` query parameter, or a
  `writeKey` field in the body.
- `GET /v1/projects/{writeKey}/settings` (Segment's CDN settings) and
  `GET /sourceConfig/?writeKey=` (RudderStack's source config): what browser
  SDKs read before sending, pointing them back here (see
  :mod:`streams.services.sdk_settings`); unknown write keys get 404.
- CORS for the origins of `SEGSTREAM_CORS_ORIGINS` (see :mod:`streams.services.cors`).

Each event is produced to the events topic keyed by its user id (to the user's
canonical partition), and a request is answered only after the broker
acknowledged every one of its events:

- 200 `{"success": true}`: every event is in Kafka;
- 400: the body is over its limit (32 KB per call and per event, 500 KB per
  batch), is not JSON, or has an event without `userId` or `anonymousId`;
  the message names the problem and nothing was produced;
- 401: no write key, or one the collector does not know; nothing produced;
- 503 (with `Retry-After`): the broker is not reachable, or did not acknowledge
  in `SEGSTREAM_ACK_TIMEOUT_SECONDS`; SDKs retry, and the worker drops a
  resent event whose `messageId` it has applied.

The collector listens before the broker answers: `/healthz` is 200 at once,
`/readyz` 200 only while the broker is reachable. Run it with `segstream
collector`; :func:`build_app` gives the ASGI app::

    app = build_app(settings, AckingProducer(lambda: reliable_producer(settings)))
"""

from __future__ import annotations

import base64
import binascii
import collections
import uuid
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from processors.tracking import CALL_TYPES, CallError, decode_calls
from streams.connectivity import KAFKA
from streams.services.acks import AckingProducer, NotAcknowledgedError
from streams.services.cors import Cors, origins
from streams.services.credentials import Credentials
from streams.services.http_metrics import RequestMetrics, service_app
from streams.services.sdk_settings import Endpoint, rudderstack_source_config, segment_settings
from streams.services.tracking_path import TrackingPath
from streams.services.tracking_schema import Accepted, Problem, request_body, request_schemas
from streams.settings import Settings

REQUESTS = RequestMetrics("segstream_collector")
EVENTS = Counter(
    "segstream_collector_events_total",
    "Events produced to the events topic and acknowledged, by call type.",
    ["type"],
)
REFUSED = Counter(
    "segstream_collector_refused_requests_total",
    "Requests answered with an error, by reason (auth, limit, invalid, unacknowledged).",
    ["reason"],
)
ACK_SECONDS = Histogram(
    "segstream_collector_ack_seconds",
    "Time from producing a request's events to the broker acknowledging all of them.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
REQUEST_BYTES = Histogram(
    "segstream_collector_request_bytes",
    "Size of accepted request bodies after decompression.",
    buckets=(256, 1024, 4096, 16_384, 65_536, 262_144, 524_288),
)

_ENDPOINTS = (*CALL_TYPES, "batch", "import")
"""The documented endpoints, each at `/v1/<endpoint>`."""
SHORT_PATHS = {"t": "track", "p": "page", "s": "screen", "i": "identify", "a": "alias"}
"""Segment's browser SDK posts each call to `/v1/<first letter of its type>`."""
_ALIASES = {
    **{f"/v1/{short}": call for short, call in SHORT_PATHS.items()},
    "/v1/g": "group",
    "/v1/b": "batch",
    "/beacon/v1/batch": "batch",
}
"""Paths SDKs use besides the documented ones, and the call each takes."""
_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": Accepted, "description": "Every event was acknowledged by the broker."},
    400: {"model": Problem, "description": "Over a size limit, invalid JSON, or no user id."},
    401: {"model": Problem, "description": "Missing or unknown write key."},
    503: {"model": Problem, "description": "The broker is unreachable or did not ack; retry."},
}
_SETTINGS_MAX_AGE = 60
"""How long browsers and CDNs may cache a settings document, in seconds."""

Take = Callable[[Request, str], Awaitable[Accepted]]


class _RefusedError(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def build_app(settings: Settings, producer: AckingProducer) -> FastAPI:
    """The collector's ASGI app, producing through `producer`."""
    keys = Credentials(settings.secrets("write_keys"), open_when_empty=settings.dev_mode)
    privacy = settings.privacy()
    app = service_app(
        "segstream collector",
        "Segment-compatible HTTP Tracking API feeding segstream's events topic.",
        REQUESTS,
    )

    @app.exception_handler(_RefusedError)
    async def refused(_request: Request, refusal: _RefusedError) -> JSONResponse:
        REFUSED.labels(reason=refusal.reason).inc()
        headers = {"Retry-After": "1"} if refusal.status == 503 else None
        if refusal.status == 401:
            headers = {"WWW-Authenticate": 'Basic realm="segstream"'}
        return JSONResponse({"detail": refusal.detail}, refusal.status, headers=headers)

    async def take(request: Request, endpoint: str) -> Accepted:
        given = _basic_user(request.headers.get("authorization"))
        if given is None:
            given = request.query_params.get("writeKey")
        if given is not None and not keys.accepts(given):
            raise _RefusedError(401, "auth", "unknown write key")
        limit = settings.max_batch_bytes if endpoint == "batch" else settings.max_event_bytes
        body = await _read_body(request, limit)
        if given is None and not keys.accepts(_body_key(body)):
            raise _RefusedError(401, "auth", "missing or unknown write key")
        try:
            events = decode_calls(
                body,
                endpoint,
                datetime.now(UTC),
                _message_id,
                max_event_bytes=settings.max_event_bytes,
                privacy=privacy,
            )
        except CallError as error:
            raise _RefusedError(400, "invalid", str(error)) from None
        if KAFKA.up is not True:
            raise _RefusedError(503, "unreachable", "the broker is not reachable; retry later")
        REQUEST_BYTES.observe(len(body))
        started = datetime.now(UTC)
        try:
            await producer.send(
                settings.events_topic,
                [(event.key, event.value) for event in events],
                timeout=settings.ack_timeout_seconds,
            )
        except NotAcknowledgedError as error:
            raise _RefusedError(503, "unacknowledged", str(error)) from None
        ACK_SECONDS.observe((datetime.now(UTC) - started).total_seconds())
        for call_type, count in collections.Counter(event.type for event in events).items():
            EVENTS.labels(type=call_type).inc(count)
        return Accepted()

    calls = {
        f"/v1/{endpoint}": "batch" if endpoint == "import" else endpoint for endpoint in _ENDPOINTS
    }
    for path, call in calls.items():
        _route(app, path, call, take)
    for path, call in _ALIASES.items():
        _route(app, path, call, take, documented=False)

    async def answer(request: Request, call: str) -> JSONResponse | None:
        try:
            await take(request, call)
        except _RefusedError as refusal:
            return await refused(request, refusal)
        return None

    app.add_middleware(TrackingPath, calls=calls | _ALIASES, take=answer, metrics=REQUESTS)
    app.add_middleware(Cors, allowed=origins(settings.cors_origins))

    def endpoint_of(request: Request) -> Endpoint:
        host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
        return Endpoint.of(settings.collector_public_url, request.url.scheme, host)

    def settings_document(write_key: str | None, document: dict[str, Any]) -> Response:
        if not write_key or not keys.accepts(write_key):
            return JSONResponse({"detail": "unknown write key"}, 404)
        cache = {"Cache-Control": f"public, max-age={_SETTINGS_MAX_AGE}"}
        return Response(orjson.dumps(document), media_type="application/json", headers=cache)

    @app.get("/v1/projects/{write_key}/settings", include_in_schema=False)
    async def segment_cdn_settings(write_key: str, request: Request) -> Response:
        return settings_document(write_key, segment_settings(write_key, endpoint_of(request)))

    @app.get("/sourceConfig", include_in_schema=False)
    @app.get("/sourceConfig/", include_in_schema=False)
    async def rudderstack_config(request: Request) -> Response:
        given = _basic_user(request.headers.get("authorization"))
        write_key = given or request.query_params.get("writeKey")
        return settings_document(write_key, rudderstack_source_config(write_key or ""))

    @app.post("/v1/m", include_in_schema=False)
    async def sdk_telemetry() -> Accepted:
        return Accepted()  # the browser SDK's own metrics: taken, not events

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        if KAFKA.up is not True:
            return Response("broker unreachable\n", 503, media_type="text/plain")
        return Response("ok\n", media_type="text/plain")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _route(app: FastAPI, path: str, call: str, take: Take, *, documented: bool = True) -> None:
    async def handle(request: Request) -> Accepted:
        return await take(request, call)

    app.post(
        path,
        response_model=Accepted,
        responses=_ANSWERS,
        summary=f"Send a {call} call" if call != "batch" else "Send many calls at once",
        openapi_extra={"requestBody": request_body(call)},
        operation_id="post_" + path.removeprefix("/v1/").strip("/").replace("/", "_"),
        include_in_schema=documented,
    )(handle)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(request_schemas())
        components["securitySchemes"] = {
            "writeKey": {"type": "http", "scheme": "basic", "description": "write key as user"}
        }
        schema["security"] = [{"writeKey": []}]
        app.openapi_schema = schema
    return app.openapi_schema


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed, refused once it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise _RefusedError(400, "invalid", f"unsupported Content-Encoding {encoding!r}")
    if encoding == "identity" and declared.isdigit() and int(declared) > limit:
        raise _RefusedError(400, "limit", f"body of {declared} bytes is over the limit of {limit}")
    inflate = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if inflate is not None:
            try:
                chunk = inflate.decompress(chunk, limit + 1 - size)
            except zlib.error as error:
                raise _RefusedError(400, "invalid", f"body is not valid gzip: {error}") from None
        size += len(chunk)
        if size > limit:
            raise _RefusedError(400, "limit", f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    if inflate is not None and not inflate.eof:
        raise _RefusedError(400, "invalid", "body is not valid gzip: truncated or over the limit")
    return b"".join(chunks)


def _basic_user(header: str | None) -> str | None:
    """The user of an HTTP basic `Authorization` header (Segment's write key), if any."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0]


def _body_key(body: bytes) -> str | None:
    """A `writeKey` field at the top of a JSON body (Segment's alternative to basic auth)."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    key = document.get("writeKey") if isinstance(document, dict) else None
    return key if isinstance(key, str) else None


def _message_id() -> str:
    return f"api-{uuid.uuid4()}"
