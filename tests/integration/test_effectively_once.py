"""Exactly-once state: crashes and rebalances leave the same profiles as one clean run."""

from __future__ import annotations

import random
import subprocess
import sys
import time

import orjson
import pytest

from processors.events import Action, decode_event
from streams.simulator import Simulation
from tests.integration.conftest import (
    assert_same_profiles,
    environment,
    export,
    isolated_settings,
    read_topic,
    wait_for_events,
)

pytestmark = pytest.mark.integration
EVENTS = 200_000


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """200,000 simulated events with a few malformed ones, as a JSON Lines file."""
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


def replay_in_background(settings, path, log):
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "replay", str(path), "--until", "2026-11-01"],
        env=environment(settings),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def clean_run(stack, history, tmp_path_factory):
    """One uninterrupted worker over the history: the reference export."""
    from tests.integration.conftest import WorkerProcess

    settings = isolated_settings(stack)
    logs = tmp_path_factory.mktemp("clean")
    worker = WorkerProcess(settings, logs / "worker.log")
    replay = replay_in_background(settings, history, logs / "replay.log")
    assert replay.wait(600) == 0, (logs / "replay.log").read_text()
    assert worker.stop() == 0
    exported = export(settings)
    assert len(exported) > 800
    return exported


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
    config, start_worker, history, clean_run, tmp_path, model
):
    first = start_worker()
    replay = replay_in_background(config, history, tmp_path / "replay.log")
    wait_for_events(model, EVENTS // 4, timeout=300)
    second = start_worker()
    wait_for_events(model, EVENTS * 2 // 3, timeout=300)
    assert second.stop() == 0
    assert replay.wait(600) == 0, (tmp_path / "replay.log").read_text()
    assert first.stop() == 0
    assert_same_profiles(export(config), clean_run)
    assert "partitions assigned" in (tmp_path / "worker-1.log").read_text()
