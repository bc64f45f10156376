"""The trainer: a Faust app that learns the clustering model from the features topic and
the predictions from the examples topic.

One agent reads the workers' feature-vector messages and feeds them to the
:class:`~processors.training.OnlineClusterer` (River scaler + k-means, user
sample, drift detector); another reads the labelled examples, each once, into
:class:`~processors.prediction_training.Predictions`. A timer publishes a snapshot every
`SEGSTREAM_SNAPSHOT_SECONDS`: first to Redis (latest, history and the user
sample to resume from), then to the compacted models topic the workers follow.
The web endpoint serves `/model` (the latest snapshot's summary),
`/metrics` and `/healthz`.

A restarted trainer resumes from the snapshot and sample in Redis. Only a
trainer that learned something since its last snapshot publishes, so a
second instance in the same group waits as a standby; when it takes the
features partition over, it resumes from the newest snapshot in Redis first.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from processors.examples import Deduplicator, ExampleError, unpack_examples
from processors.model import ModelSnapshot, SnapshotError
from processors.prediction_training import Predictions, prediction_quantiles
from processors.training import OnlineClusterer
from processors.vectors import VectorError, unpack_vectors
from processors.wire import MODEL_KEY
from state.model_store import ModelStore
from streams.kafka import faust_broker
from streams.redis_clients import redis_client
from streams.settings import Settings
from streams.trainer import metrics

log = logging.getLogger(__name__)


class Trainer:
    """The trainer's model and where its snapshots go, apart from Faust's plumbing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = OnlineClusterer(settings.trainer_config())
        self.store = ModelStore(redis_client(settings), settings.key_layout())
        self.predictions = Predictions()
        self.seen = Deduplicator()
        self.fresh = 0
        """Vectors and examples learned since the last snapshot."""

    def resume(self) -> None:
        """Continue from the newest snapshot in Redis, if there is a valid one."""
        try:
            latest = self.store.latest()
        except SnapshotError as error:
            history = self.store.history()
            self.model.version = max(self.model.version, history[-1]["version"] if history else 0)
            log.error(
                "stored snapshot refused, starting afresh from v%d: %s", self.model.version, error
            )
            return
        if latest is None or latest.version <= self.model.version:
            return
        self.model = OnlineClusterer(self.settings.trainer_config())
        self.model.restore(latest, self.store.sample())
        self.predictions = Predictions()
        self.predictions.restore(latest.predictions)
        metrics.show(latest)
        log.info(
            "trainer resumed version=%d generation=%d clusters=%d sample=%d",
            latest.version,
            latest.generation,
            len(latest.clusters),
            len(self.model.sample),
        )

    def learn(self, message: bytes) -> int:
        """Learn from one features message; the vectors it held."""
        try:
            vectors = unpack_vectors(message)
        except VectorError as error:
            metrics.BAD_MESSAGES.inc()
            log.warning("features message skipped: %s", error)
            return 0
        drifts = self.model.drifts
        self.model.learn_many(vectors)
        if self.model.drifts > drifts:
            metrics.DRIFTS.inc(self.model.drifts - drifts)
            log.warning("drift detected on assignment distances; re-clustering at next snapshot")
        metrics.VECTORS.inc(len(vectors))
        metrics.SAMPLE_USERS.set(len(self.model.sample))
        metrics.ASSIGNMENT_DISTANCE.set(self.model.detector.estimation)
        self.fresh += len(vectors)
        return len(vectors)

    def learn_examples(self, message: bytes) -> int:
        """Learn from one examples message, each example once; the examples learned."""
        try:
            examples = unpack_examples(message)
        except ExampleError as error:
            metrics.BAD_MESSAGES.inc()
            log.warning("examples message skipped: %s", error)
            return 0
        fresh = [example for example in examples if self.seen.first_time(example)]
        for example in fresh:
            self.predictions.learn(example)
            metrics.EXAMPLES.labels(prediction=example.prediction).inc()
        self.fresh += len(fresh)
        return len(fresh)

    def snapshot(self, now: float) -> ModelSnapshot | None:
        """The next snapshot, saved to Redis; `None` when there is nothing new to publish."""
        if not self.fresh:
            return None
        self.resume()  # another trainer may have published since (a standby taking over)
        snapshot = self.model.snapshot(now)
        if snapshot is None:
            return None
        models = self.predictions.models()
        quantiles = prediction_quantiles(models, self.model.sample.inputs.values())
        snapshot = snapshot.model_copy(
            update={"predictions": models, "quantiles": {**snapshot.quantiles, **quantiles}}
        )
        self.store.save(snapshot, list(self.model.sample.rows.items()))
        self.fresh = 0
        metrics.SNAPSHOTS.labels(reason=snapshot.reason).inc()
        metrics.show(snapshot)
        log.info(
            "snapshot published version=%d generation=%d reason=%s clusters=%s",
            snapshot.version,
            snapshot.generation,
            snapshot.reason,
            ", ".join(f"{c.id} {c.name} {c.share:.1%}" for c in snapshot.clusters),
        )
        return snapshot

    def status(self) -> dict[str, Any]:
        """What `/model` shows: the latest snapshot without its percentiles."""
        previous = self.model.previous
        return {
            "learned": self.model.learned,
            "sample_users": len(self.model.sample),
            "drifts": self.model.drifts,
            "snapshot": None
            if previous is None
            else previous.model_dump(mode="json", exclude={"quantiles"}),
        }


def build_app(settings: Settings, trainer: Trainer) -> faust.App:
    """The Faust app: an agent over the features topic and a snapshot timer."""
    app = faust.App(
        f"{settings.group_id}-trainer",
        **faust_broker(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        topic_partitions=1,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.trainer_web_port > 0,
        web_port=settings.trainer_web_port or 6066,
        web_bind=settings.metrics_host,
        datadir=Path(tempfile.gettempdir()) / f"segstream-trainer-{settings.redis_prefix}",
        autodiscover=False,
    )
    features = app.topic(settings.features_topic, value_type=bytes, key_type=bytes)
    examples = app.topic(settings.examples_topic, value_type=bytes, key_type=bytes)
    models = app.topic(settings.models_topic, value_type=bytes, key_type=bytes)

    @app.task
    async def resume() -> None:
        trainer.resume()

    @app.agent(features, name="learn")
    async def learn(stream: Any) -> None:
        async for message in stream:
            trainer.learn(message)

    @app.agent(examples, name="learn-examples")
    async def learn_examples(stream: Any) -> None:
        async for message in stream:
            trainer.learn_examples(message)

    @app.timer(interval=settings.snapshot_seconds)
    async def publish() -> None:
        snapshot = trainer.snapshot(time.time())
        if snapshot is not None:
            await models.send(key=MODEL_KEY, value=snapshot.to_json())

    @app.page("/model")
    async def model_status(web: Any, _request: Any) -> Any:
        return web.json(trainer.status())

    @app.page("/healthz")
    async def healthz(web: Any, _request: Any) -> Any:
        return web.text("ok\n")

    @app.page("/metrics")
    async def prometheus(web: Any, _request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app


def run(settings: Settings) -> None:
    """Run the trainer until SIGINT or SIGTERM."""
    trainer = Trainer(settings)
    app = build_app(settings, trainer)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
