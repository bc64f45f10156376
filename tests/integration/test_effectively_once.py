"""Faults change nothing: crashes, rebalances and outages leave the profiles of one clean run.

Every scenario sends the same history through the pipeline while something goes wrong,
then compares `profiles export` with an uninterrupted run's and checks that each user's
change versions have no gaps. `FAULT_EVENTS` sets the history's size (`make chaos`: 200,000).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import orjson
import pytest
import redis

from processors.events import Action, decode_event
from state.keys import KeyLayout
from state.read_model import ReadModel
from streams.tools.embedded import Stack, free_port, spawn_redis, wait_for_redis
from streams.tools.simulator import Simulation
from tests.integration.conftest import (
    assert_same_profiles,
    environment,
    export,
    isolated_settings,
    read_topic,
    wait_for_events,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(apache_stack: Stack) -> Stack:
    """These tests run on Apache Kafka."""
    return apache_stack


EVENTS = int(os.environ.get("FAULT_EVENTS", "50000"))


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """`EVENTS` simulated events with a few malformed ones, as a JSON Lines file."""
    path = tmp_path_factory.mktemp("history") / "events.jsonl"
    simulation = Simulation(users=900, seed=21, invalid_share=0.002)
    count = 0
    with path.open("wb") as handle:
        for event in simulation.events():
            handle.write(event.value + b"\n")
            count += 1
            if count == EVENTS:
                break
    return path


def replay_in_background(settings, path, log, rate=None):
    paced = ["--rate", str(rate)] if rate else []
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "replay", str(path), "--until", "2026-11-01", *paced],
        env=environment(settings),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def one_clean_run(settings, history, logs):
    """One uninterrupted worker over the history on `settings`: its export."""
    from tests.integration.conftest import WorkerProcess

    worker = WorkerProcess(settings, logs / "worker.log")
    replay = replay_in_background(settings, history, logs / "replay.log")
    assert replay.wait(600) == 0, (logs / "replay.log").read_text()
    assert worker.stop() == 0
    exported = export(settings)
    assert len(exported) > 300
    return exported


@pytest.fixture(scope="module")
def clean_run(stack, history, tmp_path_factory):
    """The reference export, on four partitions."""
    return one_clean_run(isolated_settings(stack), history, tmp_path_factory.mktemp("clean"))


def changes_by_user(settings):
    history = {}
    for message in read_topic(settings, settings.changes_topic):
        change = orjson.loads(message.value())
        history.setdefault(change["user_id"], {})[change["version"]] = change
    return history


def assert_versions_without_gaps(settings, exported):
    history = changes_by_user(settings)
    for line in exported:
        profile = orjson.loads(line)
        versions = history.get(profile["user_id"], {})
        assert sorted(versions) == list(range(1, len(versions) + 1)), profile["user_id"]
        if versions:
            assert versions[len(versions)]["segments"] == profile["segments"]


def test_sigkilled_worker_leaves_the_same_profiles_as_a_clean_run(
    config, start_worker, history, clean_run, tmp_path, model
):
    rng = random.Random(7)
    worker = start_worker()
    replay = replay_in_background(config, history, tmp_path / "replay.log")
    kills = 0
    while kills < 5:
        target = rng.randrange(EVENTS // 10, EVENTS * 9 // 10)
        wait_for_events(model, min(target, EVENTS - 1_000), timeout=300)
        time.sleep(rng.random())
        worker.kill()
        kills += 1
        worker = start_worker()
    assert replay.wait(600) == 0, (tmp_path / "replay.log").read_text()
    worker.stop()
    exported = export(config)
    assert_same_profiles(exported, clean_run)
    counters = model.counters()
    malformed = sum(
        1
        for line in history.read_bytes().splitlines()
        if not isinstance(decode_event(line), Action)
    )
    assert counters["events"] + counters["dead_letters"] == EVENTS
    assert counters["dead_letters"] == malformed
    assert_versions_without_gaps(config, exported)


def test_a_second_worker_joining_and_leaving_leaves_the_same_profiles(
    config, start_worker, history, clean_run, model
):
    small_batches = config.model_copy(update={"batch_max_events": 100})
    first = start_worker(small_batches)
    replay = replay_in_background(
        config, history, first.log.with_name("replay.log"), rate=EVENTS // 40
    )  # forty seconds of traffic, so that the second worker joins mid-stream
    wait_for_events(model, EVENTS // 5, timeout=300)
    second = start_worker(small_batches)
    second.wait_for_log("partitions assigned", timeout=120)
    joined = model.counters()
    assert joined["events"] < EVENTS * 9 // 10, "the stream drained before the second worker joined"
    wait_for_events(model, joined["events"] + EVENTS // 10, timeout=300)
    assert second.stop() == 0
    assert replay.wait(600) == 0, first.log.with_name("replay.log").read_text()
    assert first.stop() == 0
    assert_same_profiles(export(config), clean_run)
    assert first.log.read_text().count("partitions assigned") >= 2


def test_four_workers_on_sixteen_partitions_one_killed_and_one_added(
    stack, history, tmp_path_factory
):
    """Many workers: four share sixteen partitions; one is SIGKILLed and a fifth joins
    mid-replay. The profiles are those of one worker alone on the same sixteen
    partitions, and every user's change versions run without gaps."""
    from tests.integration.conftest import WorkerProcess

    alone = isolated_settings(stack, partitions=16)
    reference = one_clean_run(alone, history, tmp_path_factory.mktemp("alone"))

    settings = isolated_settings(stack, partitions=16)
    logs = tmp_path_factory.mktemp("many")
    model = ReadModel(redis.Redis.from_url(settings.redis_url), KeyLayout(settings.redis_prefix))
    small_batches = settings.model_copy(update={"batch_max_events": 200})
    workers = [WorkerProcess(small_batches, logs / f"worker-{n}.log") for n in range(4)]
    for worker in workers:
        worker.wait_for_log("partitions assigned", timeout=120)
    replay = replay_in_background(settings, history, logs / "replay.log", rate=EVENTS // 40)
    wait_for_events(model, EVENTS // 4, timeout=300)
    workers[1].kill()
    added = WorkerProcess(small_batches, logs / "worker-4.log")
    added.wait_for_log("partitions assigned", timeout=120)
    assert model.counters()["events"] < EVENTS * 9 // 10, "the stream drained before the join"
    assert replay.wait(600) == 0, (logs / "replay.log").read_text()
    for worker in [workers[0], *workers[2:], added]:
        assert worker.stop() == 0
    exported = export(settings)
    assert_same_profiles(exported, reference)
    assert_versions_without_gaps(settings, exported)
    for worker in [*workers, added]:
        assert "partitions assigned=" in worker.log.read_text()


def assert_as_clean(settings, worker, replay, clean_run, log):
    assert replay.wait(600) == 0, log.read_text()
    assert worker.stop() == 0
    exported = export(settings)
    assert_same_profiles(exported, clean_run)
    assert_versions_without_gaps(settings, exported)


def test_redis_stopped_for_ten_seconds_mid_stream_changes_nothing(
    config, start_worker, history, clean_run, tmp_path
):
    directory = tmp_path / "redis"
    directory.mkdir()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = spawn_redis(directory, port, durable=True)
    wait_for_redis(url, server)
    settings = config.model_copy(update={"redis_url": url})
    model = ReadModel(redis.Redis.from_url(url), KeyLayout(settings.redis_prefix))
    try:
        worker = start_worker(settings)
        replay = replay_in_background(settings, history, tmp_path / "replay.log")
        wait_for_events(model, EVENTS // 3, timeout=300)
        server.terminate()
        server.wait(30)
        time.sleep(10)
        server = spawn_redis(directory, port, durable=True)
        wait_for_redis(url, server)
        assert_as_clean(settings, worker, replay, clean_run, tmp_path / "replay.log")
        logged = worker.log.read_text()
        assert "redis unreachable: batch not committed" in logged
        assert "resumed from the committed offsets" in logged
    finally:
        server.terminate()
        server.wait(30)


def test_broker_frozen_for_ten_seconds_mid_stream_changes_nothing(
    config, stack, start_worker, history, clean_run, tmp_path, model
):
    worker = start_worker()
    replay = replay_in_background(config, history, tmp_path / "replay.log")
    wait_for_events(model, EVENTS // 3, timeout=300)
    os.kill(stack.broker_pid, signal.SIGSTOP)
    try:
        time.sleep(10)
    finally:
        os.kill(stack.broker_pid, signal.SIGCONT)
    assert_as_clean(config, worker, replay, clean_run, tmp_path / "replay.log")


def features_by_user(exported):
    return {row["user_id"]: row["features"] for row in map(orjson.loads, exported)}


def test_trainer_killed_and_restarted_mid_stream_changes_no_aggregate(
    config, start_worker, history, clean_run, tmp_path, model
):
    """Segments with percentile thresholds and clusters follow the model, whose snapshots
    come when they come; the aggregates and the order of each user's changes may not."""
    settings = config.model_copy(
        update={
            "snapshot_seconds": 2,
            "cluster_min_users": 150,
            "recluster_seconds": 0,
            "trainer_web_port": free_port(),
        }
    )
    worker = start_worker(settings)
    trainer = start_worker(settings, "trainer")
    replay = replay_in_background(settings, history, tmp_path / "replay.log")
    trainer.wait_for_log("snapshot published", timeout=120)
    trainer.kill()
    wait_for_events(model, EVENTS // 2, timeout=300)
    restarted = start_worker(settings, "trainer")
    restarted.wait_for_log("trainer resumed version=")
    assert replay.wait(600) == 0, (tmp_path / "replay.log").read_text()
    worker.wait_for_log("model switched to=", timeout=120)
    assert worker.stop() == 0
    restarted.stop()
    exported = export(settings)
    assert features_by_user(exported) == features_by_user(clean_run)
    assert_versions_without_gaps(settings, exported)
