"""segstream on a Redis Cluster of three masters: workers killed mid-replay leave the profiles
of a clean run on one Redis, a master killed mid-replay fails over to its replica and changes
nothing, the trainer stores its snapshots, and a seed that is not what
`SEGSTREAM_REDIS_CLUSTER` says stops every process at start-up naming the setting."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from state.keys import KeyLayout
from state.read_model import ReadModel
from streams.redis_clients import redis_client
from streams.tools.redis_cluster import running_redis_cluster
from tests.integration.conftest import (
    FAULT_EVENTS,
    HISTORY_UNTIL,
    WorkerProcess,
    assert_counted_once,
    assert_matches_oracle,
    assert_same_profiles,
    export,
    isolated_settings,
    one_clean_run,
    replay_in_background,
    replay_killing_the_worker,
    run_worker_and_trainer,
    segstream,
    wait_for_events,
)

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster]


@pytest.fixture(scope="module")
def clean_run(embedded_stack, history, tmp_path_factory):
    """The reference export: one worker, one Redis, four partitions."""
    return one_clean_run(
        isolated_settings(embedded_stack), history, tmp_path_factory.mktemp("clean")
    )


def test_workers_killed_five_times_on_a_cluster_leave_the_profiles_of_a_clean_run(
    config, start_worker, history, clean_run, tmp_path, model, redis_cluster
):
    replay_killing_the_worker(config, start_worker, history, model, tmp_path / "replay.log", 11)
    exported = export(config)
    assert_same_profiles(exported, clean_run)
    assert_matches_oracle(config, exported, history.read_bytes().splitlines(), HISTORY_UNTIL)
    assert_counted_once(model, history)
    assert model.counters()["timers_fired"] > 0  # `replay --until` moved every watermark past them
    # Every master holds some partitions' keys.
    keys = KeyLayout(config.redis_prefix, config.events_topic)
    owners = {model.client.keyslot(keys.tag(partition)) for partition in range(config.partitions)}
    nodes = {model.client.nodes_manager.get_node_from_slot(slot).port for slot in owners}
    assert len(nodes) > 1, f"the partitions' keys all landed on {nodes}"
    assert set(nodes) <= set(redis_cluster.ports)


def test_the_trainer_and_a_worker_run_on_a_cluster(config, start_worker):
    early = {"cluster_min_users": 20, "cluster_k_max": 4, "snapshot_seconds": 1}
    run_worker_and_trainer(config.model_copy(update=early), start_worker)


def test_a_seed_that_is_not_what_the_setting_says_stops_every_process(config, embedded_stack):
    plain = config.model_copy(update={"redis_url": embedded_stack.redis_url})
    unset = config.model_copy(update={"redis_cluster": False, "api_tokens": "tok-1"})
    runs = [(plain, command) for command in (["worker"], ["profile", "ann"], ["migrate"])]
    runs += [(unset, command) for command in (["worker"], ["profile", "ann"], ["api"])]
    with ThreadPoolExecutor(len(runs)) as pool:  # each waits on its own start-up
        results = list(pool.map(lambda run: segstream(run[0], *run[1], timeout=120), runs))
    for (settings, command), done in zip(runs, results, strict=True):
        assert done.returncode == 1, command
        if settings is plain:
            assert "SEGSTREAM_REDIS_CLUSTER=true, but SEGSTREAM_REDIS_URL" in done.stderr
            assert "is a Redis without cluster mode" in done.stderr
        else:
            assert "is a node of a Redis Cluster: set SEGSTREAM_REDIS_CLUSTER=true" in done.stderr


def test_a_master_killed_mid_replay_fails_over_to_its_replica_and_the_profiles_hold(
    stack, history, clean_run, tmp_path
):
    """A cluster of three masters with a replica each: a master holding partitions is
    SIGKILLed mid-replay, its replica takes its slots over, the worker carries on, and the
    profiles are a clean run's, as the oracle computes them. Writes the master acknowledged
    but had not passed on are lost with their partition's offsets (one slot holds both), so
    the worker reads those events again."""
    with running_redis_cluster(tmp_path / "cluster", replicas=1) as cluster:
        settings = isolated_settings(stack).model_copy(
            update={"redis_url": cluster.url, "redis_cluster": True}
        )
        model = ReadModel(redis_client(settings), settings.key_layout())
        worker = WorkerProcess(settings, tmp_path / "worker.log")
        replay = replay_in_background(
            settings, history, tmp_path / "replay.log", FAULT_EVENTS // 30
        )
        wait_for_events(model, FAULT_EVENTS // 3, timeout=300)
        os.kill(cluster.pids[1], signal.SIGKILL)
        promoted = redis.Redis("127.0.0.1", cluster.replica_ports[1])
        deadline = time.monotonic() + 60
        while promoted.info("replication")["role"] != "master":
            assert time.monotonic() < deadline, "the replica never took over"
            time.sleep(0.2)
        assert replay.wait(600) == 0, (tmp_path / "replay.log").read_text()
        assert worker.stop() == 0, worker.log.read_text()[-3000:]
        exported = export(settings)
        assert_same_profiles(exported, clean_run)
        assert_matches_oracle(settings, exported, history.read_bytes().splitlines(), HISTORY_UNTIL)
