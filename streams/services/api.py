"""The read API: users' segments for personalization engines, segment listings, erasure.

Every `/v1` route needs `Authorization: Bearer <token>` with one of
`SEGSTREAM_API_TOKENS`; `/healthz`, `/readyz`, `/metrics` and
`/openapi.json` do not.

- `GET /v1/users/{id}`: segments, cluster (id and name), versions and the event
  time they are as of; `?features=true` adds the features. An id merged into
  another user answers for that user.
- `GET /v1/segments`: every rule segment (definition and size) and cluster
  (name, share in the model, size).
- `GET /v1/segments/{name}/members?limit=&cursor=`: members a page at a time;
  pass `next_cursor` back until it is null.
- `POST /v1/rules/preview?sample=`: a candidate rules file (the YAML as the
  body) against every stored user, exactly, changing nothing: per segment of
  either file, members now and with it, entering and leaving, with example
  ids; 422 lists every error with its line and field.
- `DELETE /v1/users/{id}`: erasure. Answers 202 once the request is on the
  events topic; the worker that owns the user then removes their state,
  labels, membership and timer, and ids merged with them, and publishes a
  tombstone (null value) for each on the change topic.

Run it with `segstream api`; :func:`build_app` gives the ASGI app::

    app = build_app(settings, AckingProducer(lambda: reliable_producer(settings)))
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
import redis.asyncio as aioredis
from confluent_kafka import KafkaException
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest
from pydantic import BaseModel, Field
from redis.exceptions import RedisClusterException
from starlette.types import ASGIApp, Receive, Scope, Send

from processors._core import PREDICTIONS
from processors._core import Classifier as CompiledRules
from processors.classifier import Classifier
from processors.model import ClusterAssigner, ModelSnapshot, PredictionQuality
from processors.rules import RuleFileError, RuleSet, parse_rules
from processors.wire import CONTROL_HEADER, ERASE
from state.keys import KeyLayout
from state.lane import Lane
from state.lookups import CursorError, Lookups
from streams.connectivity import REDIS
from streams.redis_clients import STORE_UNREACHABLE, async_redis_client, redis_client
from streams.rules_feed import InForce, load_rules
from streams.rules_preview import preview_rules
from streams.services.acks import AckingProducer, NotAcknowledgedError
from streams.services.console.access import ConsoleAccess
from streams.services.console.publishing import publish_rules
from streams.services.console.routes import ConsoleSources, add_console
from streams.services.credentials import Credentials
from streams.services.http_metrics import RequestMetrics, service_app
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.generations import Build

log = logging.getLogger(__name__)

REQUESTS = RequestMetrics("segstream_api")
SEGMENT_MEMBERS = Gauge(
    "segstream_segment_members",
    "Users in each rule segment, read from Redis when scraped.",
    ["segment"],
)
CLUSTER_MEMBERS = Gauge(
    "segstream_cluster_members",
    "Users in each cluster (and cold-start), read from Redis when scraped.",
    ["cluster"],
)
_MODEL_POLL = 5.0
_RULES_POLL = 0.5
_BUILD_POLL = 2.0
_REDIS_CONNECTIONS = 32
"""Redis connections the API keeps; a request waits (up to 5 s) for a free one."""


class UserView(BaseModel):
    """A user's live labels."""

    user_id: str = Field(description="The user answered for (the merged-into user for an alias).")
    segments: list[str]
    cluster: str | None = Field(description="Cluster id, `cold-start`, or null before a model.")
    cluster_name: str | None = Field(None, description="Readable name of the cluster.")
    version: int = Field(description="Grows by one with each of the user's changes.")
    model_version: int | None
    rules_version: str | None
    event_time: float = Field(description="Event time (epoch s) the labels are as of.")
    features: dict[str, float | str] | None = Field(None, description="With `?features=true`.")
    traits: dict[str, bool | float | str | None] | None = Field(
        None, description="With `?features=true`: the identify traits kept, by name."
    )
    computed: dict[str, bool | float | str | None] | None = Field(
        None,
        description="With `?features=true`: the computed traits of the rules in force, by name "
        "(times as ISO 8601 text).",
    )
    predictions: dict[str, float | None] | None = Field(
        None,
        description="With `?features=true`: `purchase_30d`, `churn_90d` and `revenue_90d` as "
        "the model in force scores them now; null while gated (docs/predictions.md).",
    )


class SegmentView(BaseModel):
    """A rule segment: its definition and how many users are in it now."""

    name: str
    description: str
    group: str | None
    condition: dict[str, Any]
    size: int
    ready: bool = Field(
        description="Whether every user has been evaluated with this definition: true once "
        "`rules apply --reevaluate` is done, or at each user's next event or timer otherwise."
    )
    exact: bool = Field(
        True,
        description="False when the segment reads further back than the events topic held "
        "when its generation was built (`rules apply --backfill --accept-partial-history`).",
    )
    waiting_for: Literal["model"] | None = Field(
        None,
        description="`model` while a percentile or prediction the segment uses (or a segment "
        "it refers to uses) is unknown: no model snapshot gives it yet, and the comparison is "
        "false for everyone until `segstream trainer` publishes one that does; `ready` is "
        "false meanwhile.",
    )
    lacking: list[str] = Field(
        default_factory=list,
        description="What it waits for: percentiles (`p90(revenue_30d)`) and predictions "
        "(`prediction.purchase_30d`) the latest snapshot does not give.",
    )


class ClusterView(BaseModel):
    """A cluster of the latest model: its name, share in the model's sample, users in it now."""

    id: str
    name: str
    share: float
    size: int


class BuildView(BaseModel):
    """A generation being built from the events topic's history (`rules apply --backfill`)."""

    generation: int
    rules_version: str
    built: int = Field(description="Messages of the events topic rebuilt so far.")
    total: int = Field(description="Messages the events topic holds.")
    partial: list[str] = Field(
        description="Segments of the rules being built that cannot be exact for lack of history."
    )


class SegmentsView(BaseModel):
    """The rules and model in force and their segments, and any generation being built."""

    rules_version: str
    generation: int = Field(description="The generation of users' state serving the rules.")
    model_version: int | None
    segments: list[SegmentView]
    clusters: list[ClusterView]
    building: BuildView | None = None


class PredictionView(BaseModel):
    """One prediction: whether it is scored, the labels its model learned, and its quality."""

    name: str
    scored: bool = Field(
        description="False while gated: fewer than 100 positive or 100 negative labels."
    )
    positives: int
    negatives: int
    quality: PredictionQuality | None = Field(
        None,
        description="Over the latest 10,000 examples scored with the prediction made at their "
        "snapshot (docs/predictions.md).",
    )


class PredictionsView(BaseModel):
    """The predictions of the model in force."""

    model_version: int | None
    predictions: list[PredictionView]


class MembersPage(BaseModel):
    """One page of a segment's members."""

    segment: str
    members: list[str]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: done.")


class ErasureAccepted(BaseModel):
    """An erasure request on its way to the user's worker."""

    user_id: str
    status: Literal["accepted"] = "accepted"


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


class FileProblem(BaseModel):
    """One error in a submitted file: its line (when known), field and what is wrong."""

    line: int | None
    field: str
    message: str


class FileRefused(BaseModel):
    """A submitted file that does not validate, with every error."""

    detail: str
    errors: list[FileProblem]


class PreviewExamples(BaseModel):
    """Some of the users who would enter and leave."""

    entering: list[str]
    leaving: list[str]


class SegmentPreview(BaseModel):
    """One segment of either file: members now and with the candidate, and the moves."""

    name: str
    now: int
    candidate: int
    entering: int
    leaving: int
    examples: PreviewExamples
    limits: list[str] = Field(
        description="What the segment's conditions need that users' aggregates keep only in part."
    )


class RulesPreview(BaseModel):
    """A candidate rule file evaluated against every stored user, as of each partition's
    watermark; nothing was changed."""

    as_of: str
    users: int
    current_rules: str
    candidate_digest: str
    model_version: int | None
    firing_clocks: dict[str, str | None]
    seconds: float
    segments: list[SegmentPreview]


_MAX_USER_ID = 256
UserId = Annotated[
    str, Path(min_length=1, max_length=_MAX_USER_ID, description="userId or anonymousId")
]

_AUTH_ANSWER: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown bearer token."}
}


_USER_ROUTE = "/v1/users/{user_id:path}"
_USER_PREFIX = "/v1/users/"


class _UserLookups:
    """Pure ASGI, in front of the routes: answers the API's hot request, a known user's
    lookup by a caller with a valid token and no query, without the framework's
    middleware, routing and dependencies (a third of a lookup's time); everything else,
    including unknown users, bad tokens, `?features=true` and Redis not answering, goes
    on to the routes.
    """

    def __init__(
        self,
        app: ASGIApp,
        tokens: Credentials,
        answer: Callable[[str, bool], Awaitable[bytes | None]],
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a plain lookup here; pass anything else on."""
        path: str = scope.get("path", "")
        user_id = path[len(_USER_PREFIX) :]
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope["query_string"]
            and path.startswith(_USER_PREFIX)
            and 0 < len(user_id) <= _MAX_USER_ID
            and self.tokens.accepts(_bearer(scope["headers"]))
        ):
            started = time.perf_counter()
            try:
                body = await self.answer(user_id, False)
            except STORE_UNREACHABLE:
                body = None  # the routes answer 503 and log it
            if body is not None:
                headers = [*_JSON, (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                REQUESTS.observe(_USER_ROUTE, 200, time.perf_counter() - started)
                return
        await self.app(scope, receive, send)


_JSON = [(b"content-type", b"application/json")]


def _bearer(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The bearer token of a request's `authorization` header, if any.

    >>> _bearer([(b"authorization", b"Bearer s3cret")]), _bearer([])
    ('s3cret', None)
    """
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


_BEARER = HTTPBearer(auto_error=False, description="One of SEGSTREAM_API_TOKENS.")


class _TokenCheck:
    """A dependency that refuses requests without one of the API's bearer tokens."""

    def __init__(self, tokens: Credentials) -> None:
        self.tokens = tokens

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> None:
        if not self.tokens.accepts(None if credentials is None else credentials.credentials):
            raise HTTPException(
                401, "missing or unknown bearer token", headers={"WWW-Authenticate": "Bearer"}
            )


class _Live:
    """What the API follows while it runs: the rules topic and the latest model."""

    def __init__(self, settings: Settings, lookups: Lookups) -> None:
        self.settings = settings
        self.lookups = lookups
        self.rules: RuleSet = load_rules(settings)
        self.in_force = InForce(self.rules)
        self.building: BuildView | None = None
        """The generation being built and its progress, read every `_BUILD_POLL` s."""
        self.model: ModelSnapshot | None = None
        self.cluster_names: dict[str, str] = {}
        self._stop = threading.Event()
        self._scoring: tuple[RuleSet, ModelSnapshot | None, CompiledRules] | None = None

    def scoring(self) -> CompiledRules:
        """The rules in force with the latest model: what reads computed traits and scores
        predictions, compiled again only when either changed."""
        rules, model = self.rules, self.model
        known = self._scoring
        if known is None or known[0] is not rules or known[1] is not model:
            assigner = None if model is None else ClusterAssigner(model)
            known = self._scoring = (rules, model, Classifier.of(rules, assigner).core)
        return known[2]

    async def follow_model(self) -> None:
        """Keep `model` at the latest snapshot, read every `_MODEL_POLL` s (a task), so that
        no request waits for it."""
        while True:
            await self.read_model()
            await asyncio.sleep(_MODEL_POLL)

    async def read_model(self) -> None:
        """Take the latest snapshot, if Redis has a readable one and answers."""
        try:
            latest = await self.lookups.model()
        except STORE_UNREACHABLE:
            return  # requests answer 503 meanwhile; the next read tries again
        if latest is not None:
            self.model, self.cluster_names = latest, latest.names()

    def follow_rules(self) -> None:
        """Keep `rules` at the newest published version, and the lookups on the generation
        that serves it, until :meth:`stop` (a thread)."""
        from streams.generations import BuildFeed
        from streams.rules_feed import RulesFeed

        feed, builds = RulesFeed(self.settings), BuildFeed(self.settings)
        try:
            published = feed.catch_up()
            if published is not None:
                self._take(published)
            build = builds.catch_up()
            looked = -math.inf
            while not self._stop.wait(_RULES_POLL):
                update = feed.poll()
                if update is not None:
                    self._take(update)
                    log.info("rules switched to=%s", self.rules.label)
                build = builds.poll() or build
                if time.monotonic() - looked >= _BUILD_POLL:
                    looked = time.monotonic()
                    self._look_at(build)
        finally:
            feed.close()
            builds.close()

    def _take(self, published: InForce) -> None:
        self.rules = published.rules
        self.in_force = published
        self.lookups.keys = published.keys(self.settings)

    def _look_at(self, build: Build | None) -> None:
        """Note `build`'s progress while it is not the generation in force."""
        from streams.generations import build_progress

        if build is None or build.generation <= self.in_force.generation:
            self.building = None
            return
        try:
            done = build_progress(self.settings, build.generation)
        except (*STORE_UNREACHABLE, KafkaException) as error:
            log.warning("a build's progress is unknown: %s", error)
            return
        self.building = BuildView(
            generation=build.generation,
            rules_version=f"v{build.version}",
            built=done.built,
            total=done.total,
            partial=list(build.partial),
        )

    def stop(self) -> None:
        self._stop.set()


_MAX_RULES_BYTES = 256 * 1024
_PREVIEW_EXAMPLES = 5
"""Example ids per move the console's preview shows (the CLI's default)."""


def _preview(
    settings: Settings, current: RuleSet, candidate: RuleSet, examples: int, keys: KeyLayout
) -> dict[str, Any]:
    """A rules preview on a connection of its own (it reads with blocking calls, off the
    event loop)."""
    client = redis_client(settings)
    try:
        return preview_rules(client, settings, current, candidate, examples, keys)
    finally:
        client.close()


def build_app(settings: Settings, producer: AckingProducer) -> ASGIApp:
    """The read API's ASGI app (the routes behind the lookups' fast path); erasure requests
    go out through `producer`."""
    tokens = Credentials(settings.secrets("api_tokens"), open_when_empty=settings.dev_mode)
    keys = settings.key_layout()
    client = async_redis_client(settings, _REDIS_CONNECTIONS)
    lane = None if settings.redis_cluster else Lane(client.connection_pool)
    lookups = Lookups(client, keys, lane)
    live = _Live(settings, lookups)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        follower = threading.Thread(target=live.follow_rules, name="rules", daemon=True)
        follower.start()
        model_follower = asyncio.create_task(live.follow_model())
        try:
            yield
        finally:
            model_follower.cancel()
            live.stop()
            await asyncio.to_thread(follower.join, 10)
            if lane is not None:
                await lane.close()
            await client.aclose()

    app = service_app(
        "segstream read API",
        "Users' live segments, segment definitions and members, and erasure.",
        REQUESTS,
        lifespan=lifespan,
    )
    guarded = [Depends(_TokenCheck(tokens))]

    async def user_answer(user_id: str, features: bool) -> bytes | None:
        """The body of a user's lookup (shaped as :class:`UserView`); `None`: unknown."""
        found = await lookups.user(user_id, features=features, classifier=live.scoring())
        if found is None:
            return None
        cluster = found["cluster"]
        found["cluster_name"] = live.cluster_names.get(cluster) if cluster is not None else None
        found.setdefault("features", None)
        found.setdefault("traits", None)
        found.setdefault("computed", None)
        found.setdefault("predictions", None)
        return orjson.dumps(found)

    @app.get(
        _USER_ROUTE,
        response_model=UserView,
        response_model_exclude_none=False,
        dependencies=guarded,
        responses={**_AUTH_ANSWER, 404: {"model": Problem, "description": "Unknown user."}},
        summary="A user's segments and cluster",
    )
    async def get_user(
        user_id: UserId,
        features: Annotated[bool, Query(description="Include the user's features.")] = False,
    ) -> Response:
        body = await user_answer(user_id, features)
        if body is None:
            raise HTTPException(404, f"no user {user_id!r}")
        return Response(body, media_type="application/json")

    @app.delete(
        "/v1/users/{user_id:path}",
        status_code=202,
        response_model=ErasureAccepted,
        dependencies=guarded,
        responses={**_AUTH_ANSWER, 503: {"model": Problem, "description": "Not acknowledged."}},
        summary="Erase a user: state, labels, membership; a tombstone on the change topic",
    )
    async def erase_user(user_id: UserId) -> ErasureAccepted:
        request = orjson.dumps({"userId": user_id, "requestedAt": time.time()})
        try:
            await producer.send(
                settings.events_topic,
                [(user_id.encode(), request)],
                timeout=settings.ack_timeout_seconds,
                headers=[(CONTROL_HEADER, ERASE)],
            )
        except NotAcknowledgedError as error:
            raise HTTPException(503, str(error), headers={"Retry-After": "1"}) from None
        log.info("erasure requested")
        return ErasureAccepted(user_id=user_id)

    async def segments_now() -> SegmentsView:
        """The rules and model in force, their segments and clusters with sizes."""
        rules, model = live.rules, live.model
        clusters = list(model.clusters) if model is not None else []
        sizes = await lookups.sizes(
            [partial(lookups.keys.members, segment=name) for name in rules.names]
            + [partial(lookups.keys.cluster_members, cluster=cluster.id) for cluster in clusters]
        )
        segment_sizes, cluster_sizes = sizes[: len(rules.names)], sizes[len(rules.names) :]
        digests = rules.segment_digests
        evaluated = await lookups.evaluated()
        ready = {
            name: all(not record or record.get(name) == digest for record in evaluated)
            for name, digest in digests.items()
        }
        needs = rules.model_needs
        lacking = {
            name: sorted(needs[name]) if model is None else model.lacks(sorted(needs[name]))
            for name in rules.names
        }
        return SegmentsView(
            rules_version=rules.label,
            generation=live.in_force.generation,
            building=live.building,
            model_version=model.version if model is not None else None,
            segments=[
                SegmentView(
                    name=rule.name,
                    description=rule.description,
                    group=rule.group,
                    condition=rule.condition.model_dump(
                        mode="json", exclude_none=True, by_alias=True, warnings=False
                    ),
                    size=size,
                    ready=ready[rule.name] and not lacking[rule.name],
                    exact=rule.name not in live.in_force.partial,
                    waiting_for="model" if lacking[rule.name] else None,
                    lacking=lacking[rule.name],
                )
                for rule, size in zip(rules.definition.segments, segment_sizes, strict=True)
            ],
            clusters=[
                ClusterView(id=cluster.id, name=cluster.name, share=cluster.share, size=size)
                for cluster, size in zip(clusters, cluster_sizes, strict=True)
            ],
        )

    @app.get(
        "/v1/segments",
        response_model=SegmentsView,
        dependencies=guarded,
        responses=_AUTH_ANSWER,
        summary="Rule segments and clusters with their sizes",
    )
    async def list_segments() -> SegmentsView:
        return await segments_now()

    @app.get(
        "/v1/predictions",
        response_model=PredictionsView,
        dependencies=guarded,
        responses=_AUTH_ANSWER,
        summary="The predictions of the model in force: scored or gated, labels and quality",
    )
    async def list_predictions() -> PredictionsView:
        model = live.model
        learned = model.predictions if model is not None else {}
        views = []
        for name in PREDICTIONS:
            found = learned.get(name)
            views.append(
                PredictionView(name=name, scored=False, positives=0, negatives=0, quality=None)
                if found is None
                else PredictionView(
                    name=name,
                    scored=found.ready,
                    positives=found.positives,
                    negatives=found.negatives,
                    quality=found.quality,
                )
            )
        return PredictionsView(
            model_version=model.version if model is not None else None, predictions=views
        )

    @app.get(
        "/v1/segments/{name}/members",
        response_model=MembersPage,
        dependencies=guarded,
        responses={
            **_AUTH_ANSWER,
            400: {"model": Problem, "description": "A cursor this API did not hand out."},
            404: {"model": Problem, "description": "Unknown segment or cluster."},
        },
        summary="A segment's (or cluster's) members, a page at a time",
    )
    async def members(
        name: Annotated[str, Path(min_length=1, max_length=128)],
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
    ) -> MembersPage:
        if name in live.rules.names or name in await lookups.known_segments():
            set_key = partial(lookups.keys.members, segment=name)
        elif name in await lookups.known_clusters():
            set_key = partial(lookups.keys.cluster_members, cluster=name)
        else:
            raise HTTPException(404, f"no segment or cluster {name!r}")
        try:
            page, following = await lookups.members(set_key, cursor, limit)
        except CursorError as error:
            raise HTTPException(400, str(error)) from None
        return MembersPage(segment=name, members=page, next_cursor=following)

    @app.post(
        "/v1/rules/preview",
        response_model=RulesPreview,
        dependencies=guarded,
        responses={
            **_AUTH_ANSWER,
            413: {"model": Problem, "description": "A rules file over 256 KiB."},
            422: {"model": FileRefused, "description": "The rules file does not validate."},
        },
        summary="A candidate rules file (YAML body) against every stored user, exactly",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/yaml": {"schema": {"type": "string"}}},
            }
        },
    )
    async def preview(
        request: Request,
        sample: Annotated[int, Query(ge=0, le=1000, description="Example ids per move.")] = 5,
    ) -> Response:
        body = await request.body()
        if len(body) > _MAX_RULES_BYTES:
            raise HTTPException(413, "a rules file is at most 256 KiB")
        try:
            candidate = parse_rules(body.decode("utf-8"), source="body")
        except (RuleFileError, UnicodeDecodeError) as error:
            errors = error.errors if isinstance(error, RuleFileError) else []
            refused = FileRefused(
                detail=str(error),
                errors=[FileProblem(line=e.line, field=e.field, message=e.message) for e in errors],
            )
            return JSONResponse(refused.model_dump(), status_code=422)
        report = await asyncio.to_thread(
            _preview, settings, live.rules, candidate, sample, lookups.keys
        )
        return Response(orjson.dumps(report), media_type="application/json")

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response("ok\n", media_type="text/plain")

    @app.exception_handler(aioredis.ConnectionError)
    @app.exception_handler(aioredis.TimeoutError)
    @app.exception_handler(RedisClusterException)
    async def store_unreachable(_request: Request, error: Exception) -> JSONResponse:
        REDIS.lost(f"{type(error).__name__}: {error}")
        detail = {"detail": "the segment store is unreachable; retry later"}
        return JSONResponse(detail, 503, headers={"Retry-After": "1"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        try:
            await client.ping()
        except (aioredis.RedisError, RedisClusterException) as error:
            REDIS.lost(f"{type(error).__name__}: {error}")
            return Response("redis unreachable\n", status_code=503, media_type="text/plain")
        REDIS.reached()
        return Response("ok\n", media_type="text/plain")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        names = list(live.rules.names)
        clusters = sorted(await lookups.known_clusters())
        sizes = await lookups.sizes(
            [partial(lookups.keys.members, segment=name) for name in names]
            + [partial(lookups.keys.cluster_members, cluster=c) for c in clusters]
        )
        for name, size in zip(names, sizes, strict=False):
            SEGMENT_MEMBERS.labels(segment=name).set(size)
        for cluster, size in zip(clusters, sizes[len(names) :], strict=True):
            CLUSTER_MEMBERS.labels(cluster=cluster).set(size)
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def user_found(user_id: str) -> dict[str, Any] | None:
        found = await lookups.user(user_id, features=True, classifier=live.scoring())
        if found is not None and found["cluster"] is not None:
            found["cluster_name"] = live.cluster_names.get(found["cluster"])
        return found

    async def preview_candidate(candidate: RuleSet) -> dict[str, Any]:
        return await asyncio.to_thread(
            _preview, settings, live.rules, candidate, _PREVIEW_EXAMPLES, lookups.keys
        )

    async def publish_text(text: str, mode: str, by: str) -> str:
        return await asyncio.to_thread(publish_rules, settings, text, mode, by)

    readers = settings.secrets("api_tokens")
    admins = settings.admins()
    add_console(
        app,
        ConsoleSources(
            settings,
            lookups,
            ConsoleAccess(
                Credentials([*readers, *admins.values()], open_when_empty=settings.dev_mode),
                admins,
            ),
            segments_now,
            user_found,
            lambda: live.rules,
            preview_candidate,
            publish_text,
        ),
    )
    return _UserLookups(app, tokens, user_answer)
