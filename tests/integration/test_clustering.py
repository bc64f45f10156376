"""The trainer and the workers on a real broker and Redis: clusters, snapshots, evaluation."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import defaultdict

import orjson
import pytest
from confluent_kafka import Producer

from processors.model import COLD_START
from state.model_store import ModelStore
from streams.redis_clients import redis_client
from streams.settings import Settings
from streams.tools.embedded import free_port
from streams.tools.simulate import KafkaSink, send
from streams.tools.simulator import Simulation
from tests.integration.conftest import (
    read_topic,
    segstream,
    wait_for_events,
    wait_for_settled_model,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def clustered(config: Settings) -> Settings:
    """The test's settings, with a trainer that snapshots often and clusters early."""
    values = config.model_dump()
    values.update(
        snapshot_seconds=2,
        cluster_min_users=150,
        trainer_web_port=free_port(),
        recluster_seconds=0,
    )
    return Settings(**values)


def models(settings: Settings) -> ModelStore:
    return ModelStore(redis_client(settings), settings.key_layout())


def simulate(settings: Settings, users: int, seed: int) -> Simulation:
    simulation = Simulation(users=users, seed=seed)
    send(simulation, KafkaSink(settings), rate=0, duration=0, limit=0, stop=threading.Event())
    return simulation


def wait_for_snapshot(settings: Settings, newer_than: float, timeout: float = 60):
    """The first snapshot stored after wall-clock time `newer_than`."""
    store = models(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = store.latest()
        if latest is not None and latest.created_at > newer_than:
            return latest
        time.sleep(0.5)
    raise AssertionError(f"no snapshot after {newer_than}")


def test_trainer_clusters_the_personas_and_workers_label_users_with_them(
    clustered, model, start_worker, tmp_path
):
    worker = start_worker(clustered)
    trainer = start_worker(clustered, command="trainer")
    simulation = simulate(clustered, users=900, seed=11)
    total = sum(1 for _ in simulation.events())
    wait_for_events(model, total, timeout=240)
    final = wait_for_settled_model(clustered)
    worker.wait_for_log(f"model switched to={final.version} ")

    # Every user with enough history is in a cluster; labels and membership sets agree.
    client = redis_client(clustered)
    keys = clustered.key_layout()
    by_cluster = defaultdict(set)
    for document in model.users():
        user_id = document["user_id"]
        labels = client.hgetall(keys.labels(model.partition_of(user_id), user_id))
        if document["cluster"] is not None:
            by_cluster[document["cluster"]].add(document["user_id"])
            assert labels[b"cluster"].decode() == document["cluster"]
            assert int(labels[b"model_version"]) == document["model_version"] >= 1
        if document["features"]["events_lifetime"] < final.min_events:
            assert document["cluster"] in (None, COLD_START)
    assert set(by_cluster) - {COLD_START} <= {c.id for c in final.clusters}
    for cluster, members in by_cluster.items():
        assert model.cluster_members(cluster) == members
    assert model.cluster_sizes() == {cluster: len(m) for cluster, m in by_cluster.items()}

    # The default rules' percentile threshold is known from the snapshots.
    assert model.segment_sizes().get("High-Value Recent Buyers", 0) > 0

    # Change events carry the cluster and both versions; the first model re-placed everyone.
    changes = [orjson.loads(m.value()) for m in read_topic(clustered, clustered.changes_topic)]
    assert {"model"} <= {c["reason"] for c in changes}
    moved = [c for c in changes if c["cluster"] != c["previous_cluster"]]
    assert moved
    assert all(c["model_version"] is not None for c in moved)
    assert all(c["rules_version"] for c in changes)
    versions = defaultdict(list)
    for change in changes:
        versions[change["user_id"]].append(change["version"])
    assert all(v == sorted(set(v)) for v in versions.values())

    # The trainer's web endpoint shows the model and its metrics.
    port = clustered.trainer_web_port
    status = orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/model").read())
    assert status["snapshot"]["version"] >= final.version
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    assert "segstream_trainer_vectors_total" in metrics
    assert "segstream_trainer_snapshots_total" in metrics

    # The evaluation: online ARI at least 0.9 of offline k-means on the same features.
    truth = tmp_path / "truth.jsonl"
    truth.write_bytes(b"\n".join(orjson.dumps(row) for row in simulation.truth()))
    report_dir = tmp_path / "evaluation"
    evaluated = segstream(
        clustered, "evaluate", "--truth", str(truth), "--output", str(report_dir), timeout=120
    )
    assert evaluated.returncode == 0, evaluated.stderr
    print(evaluated.stdout)
    ratio = float(evaluated.stdout.split("(ratio ")[1].split(")")[0])
    assert ratio >= 0.9, evaluated.stdout
    report = (report_dir / "report.md").read_text()
    assert "| silhouette |" in report
    assert "Davies-Bouldin" in report
    assert "Calinski-Harabasz" in report
    assert (report_dir / "clusters-pca.png").read_bytes()[:4] == b"\x89PNG"
    assert (report_dir / "segment-sizes.png").read_bytes()[:4] == b"\x89PNG"
    trainer.stop()
    worker.stop()


def test_a_killed_trainer_resumes_and_a_corrupt_snapshot_is_refused(clustered, model, start_worker):
    worker = start_worker(clustered)
    trainer = start_worker(clustered, command="trainer")
    simulation = Simulation(users=400, seed=12, days=30)
    events = list(simulation.events())
    half = len(events) // 2

    class Part(Simulation):
        def __init__(self, chunk):
            self.chunk = chunk

        def events(self):
            return iter(self.chunk)

    send(Part(events[:half]), KafkaSink(clustered), 0, 0, 0, threading.Event())
    wait_for_events(model, half, timeout=120)
    before = wait_for_snapshot(clustered, newer_than=time.time())
    trainer.kill()
    stopped = models(clustered).latest()
    assert stopped.version >= before.version

    # Garbage and an inconsistent snapshot on the models topic: refused, the model stays.
    producer = Producer({"bootstrap.servers": clustered.kafka_bootstrap})
    broken = orjson.loads(stopped.to_json())
    broken["version"] = stopped.version + 100
    broken["std"] = [0.0] * len(broken["std"])
    for value in (b"{not json", orjson.dumps(broken)):
        producer.produce(clustered.models_topic, key=b"model", value=value)
    producer.flush(10)
    worker.wait_for_log("model snapshot refused")

    restarted = start_worker(clustered, command="trainer")
    restarted.wait_for_log(f"trainer resumed version={stopped.version} ")
    send(Part(events[half:]), KafkaSink(clustered), 0, 0, 0, threading.Event())
    wait_for_events(model, len(events), timeout=120)
    following = wait_for_snapshot(clustered, newer_than=time.time())
    assert following.version > stopped.version
    assert following.generation >= stopped.generation
    worker.wait_for_log(f"model switched to={following.version} ")
    assert "model switched to=" + str(stopped.version + 100) not in worker.log.read_text()
    restarted.stop()
    worker.stop()
