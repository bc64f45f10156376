"""Faults change nothing: crashes, rebalances and outages leave the profiles of one clean run.

Every scenario sends the same history through the pipeline while something goes wrong,
then compares `profiles export` with an uninterrupted run's and checks that each user's
change versions have no gaps. `FAULT_FAULT_EVENTS` sets the history's size (`make chaos`: 200,000).
"""

from __future__ import annotations

import os
import signal
import time

import orjson
import pytest
import redis

from state.read_model import ReadModel
from streams.tools.embedded import free_port, spawn_redis, wait_for_redis
from tests.integration.conftest import (
    FAULT_EVENTS,
    HISTORY_UNTIL,
    assert_counted_once,
    assert_matches_oracle,
    assert_same_profiles,
    assert_versions_without_gaps,
    export,
    isolated_settings,
    one_clean_run,
    replay_in_background,
    replay_killing_the_worker,
    wait_for_events,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def clean_run(stack, history, tmp_path_factory):
    """The reference export, on four partitions."""
    return one_clean_run(isolated_settings(stack), history, tmp_path_factory.mktemp("clean"))


def test_sigkilled_worker_leaves_the_same_profiles_as_a_clean_run(
    config, start_worker, history, clean_run, tmp_path, model
):
    replay_killing_the_worker(config, start_worker, history, model, tmp_path / "replay.log", 7)
    exported = export(config)
    assert_same_profiles(exported, clean_run)
    assert_counted_once(model, history)
    assert_matches_oracle(config, exported, history.read_bytes().splitlines(), HISTORY_UNTIL)


def test_a_second_worker_joining_and_leaving_leaves_the_same_profiles(
    config, start_worker, history, clean_run, model
):
    small_batches = config.model_copy(update={"batch_max_events": 100})
    first = start_worker(small_batches)
    replay = replay_in_background(
        config, history, first.log.with_name("replay.log"), rate=FAULT_EVENTS // 40
    )  # forty seconds of traffic, so that the second worker joins mid-stream
    wait_for_events(model, FAULT_EVENTS // 5, timeout=300)
    second = start_worker(small_batches)
    second.wait_for_log("partitions assigned", timeout=120)
    joined = model.counters()
    assert joined["events"] < FAULT_EVENTS * 9 // 10, (
        "the stream drained before the second worker joined"
    )
    wait_for_events(model, joined["events"] + FAULT_EVENTS // 10, timeout=300)
    assert second.stop() == 0
    assert replay.wait(600) == 0, first.log.with_name("replay.log").read_text()
    assert first.stop() == 0
    assert_same_profiles(export(config), clean_run)
    assert first.log.read_text().count("partitions assigned") >= 2


def assert_as_clean(settings, worker, replay, clean_run, history, log):
    assert replay.wait(600) == 0, log.read_text()
    assert worker.stop() == 0
    exported = export(settings)
    assert_same_profiles(exported, clean_run)
    assert_matches_oracle(settings, exported, history.read_bytes().splitlines(), HISTORY_UNTIL)


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
    model = ReadModel(redis.Redis.from_url(url), settings.key_layout())
    try:
        worker = start_worker(settings)
        replay = replay_in_background(
            settings, history, tmp_path / "replay.log", rate=FAULT_EVENTS // 20
        )  # twenty seconds of traffic: a worker as fast as the replay is still taking it
        wait_for_events(model, FAULT_EVENTS // 3, timeout=300)
        server.terminate()
        server.wait(30)
        time.sleep(10)
        server = spawn_redis(directory, port, durable=True)
        wait_for_redis(url, server)
        assert_as_clean(settings, worker, replay, clean_run, history, tmp_path / "replay.log")
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
    wait_for_events(model, FAULT_EVENTS // 3, timeout=300)
    os.kill(stack.broker_pid, signal.SIGSTOP)
    try:
        time.sleep(10)
    finally:
        os.kill(stack.broker_pid, signal.SIGCONT)
    assert_as_clean(config, worker, replay, clean_run, history, tmp_path / "replay.log")


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
    wait_for_events(model, FAULT_EVENTS // 2, timeout=300)
    restarted = start_worker(settings, "trainer")
    restarted.wait_for_log("trainer resumed version=")
    assert replay.wait(600) == 0, (tmp_path / "replay.log").read_text()
    worker.wait_for_log("model switched to=", timeout=120)
    assert worker.stop() == 0
    restarted.stop()
    exported = export(settings)
    assert features_by_user(exported) == features_by_user(clean_run)
    assert_versions_without_gaps(settings, exported)
