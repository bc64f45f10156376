"""`segstream deliver` against real HTTP receivers: every change once (after de-duplication
by `webhook-id`), in version order per user, signatures verified with `standardwebhooks`;
a refusing receiver fills the dead-letter topic while a healthy one keeps its pace; a
receiver down for 30 s, a deliverer killed mid-stream and a filter switched by
`destinations apply` lose nothing; a user whose webhooks keep failing holds back only
their own changes."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from processors.destinations import moves
from processors.wire import CONTROL_HEADER, ERASE
from streams.kafka import reliable_producer
from streams.settings import Settings
from streams.tools.embedded import free_port
from streams.tools.simulate import KafkaSink, send
from streams.tools.simulator import Simulation
from streams.topics import ensure_topics
from tests.integration.conftest import read_topic, segstream, wait_for_events

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """A webhook receiver on loopback: it answers `failures` 503s to each `webhook-id`
    before 200, or `status` to everything, each after `delay` seconds; it verifies every
    signature and keeps the first delivery of each id, in arrival order. With `port`, it
    listens only once `listen` is called."""

    def __init__(
        self, failures: int = 0, status: int = 200, delay: float = 0.0, port: int = 0
    ) -> None:
        self.failures = failures
        self.status = status
        self.delay = delay
        self.attempts: dict[str, int] = defaultdict(int)
        self.delivered: dict[str, Any] = {}
        self.refused_users: set[str] = set()
        """Users whose changes are answered 503 while they are in this set."""
        self.unverified = 0
        self.lock = threading.Lock()
        self.port = port
        self.url = f"http://127.0.0.1:{port}/hook"
        if not port:
            self.listen()

    def listen(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                answer = receiver.answer(body, headers)
                self.send_response(answer)
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, body: bytes, headers: dict[str, str]) -> int:
        time.sleep(self.delay)
        try:
            payload = Webhook(SECRET).verify(body, headers)
        except Exception:
            with self.lock:
                self.unverified += 1
            return 401
        identifier = headers["webhook-id"]
        with self.lock:
            self.attempts[identifier] += 1
            if self.status != 200:
                return self.status
            if self.attempts[identifier] <= self.failures:
                return 503
            if payload["data"]["user_id"] in self.refused_users:
                return 503
            self.delivered.setdefault(identifier, payload["data"])
            return 200

    def changes(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.delivered.values())

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """The changes received once at least `count` have arrived (or `timeout` passed)."""
        deadline = time.monotonic() + timeout
        while len(self.delivered) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.changes()


def in_version_order(changes: list[dict[str, Any]]) -> bool:
    """Whether each user's changes arrived in version order."""
    by_user: dict[str, list[int]] = defaultdict(list)
    for change in changes:
        by_user[change["user_id"]].append(change["version"])
    return all(versions == sorted(versions) for versions in by_user.values())


def erase(config: Settings, users: list[str]) -> None:
    """Ask for `users`' erasure on the events topic, as the read API does."""
    producer = reliable_producer(config)
    for user in users:
        request = orjson.dumps({"userId": user, "requestedAt": time.time()})
        producer.produce(
            config.events_topic,
            key=user.encode(),
            value=request,
            headers=[(CONTROL_HEADER, ERASE)],
        )
    assert producer.flush(30) == 0


def test_a_flaky_receiver_gets_every_change_once_in_order_and_a_refusing_one_dead_letters(
    config, model, start_worker, tmp_path
):
    flaky, healthy = Receiver(failures=2), Receiver()
    refusing = Receiver(status=400, delay=0.1)
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(
        f"""destinations:
  - name: flaky
    url: {flaky.url}
    secret: {SECRET}
  - name: healthy
    url: {healthy.url}
    secret: {SECRET}
  - name: refusing
    url: {refusing.url}
    secret_env: REFUSING_SECRET
    max_attempts: 2
"""
    )
    simulation = Simulation(users=40, seed=5)
    send(simulation, KafkaSink(config), rate=0, duration=0, limit=0, stop=threading.Event())
    worker = start_worker()
    wait_for_events(model, sum(1 for _ in simulation.events()))
    erased = sorted(model.segment_members("Active Users"))[:3]
    erase(config, erased)
    deadline = time.monotonic() + 60
    while model.counters().get("erased", 0) < len(erased) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker.stop() == 0
    published = [
        orjson.loads(m.value())
        for m in read_topic(config, config.changes_topic)
        if m.value() is not None
    ]
    expected = {(c["user_id"], c["version"]) for c in published if any(moves(c).values())}
    assert len(expected) > 40

    os.environ["REFUSING_SECRET"] = SECRET  # the deliverer inherits the test's environment
    try:
        metrics_port = free_port()
        deliverer = start_worker(
            config.model_copy(
                update={
                    "destinations_file": destinations,
                    "metrics_port": metrics_port,
                    "delivery_backoff_seconds": 0.05,
                    "delivery_concurrency": 8,
                }
            ),
            "deliver",
        )
    finally:
        del os.environ["REFUSING_SECRET"]
    # the healthy destination takes everything at its own pace while the refusals crawl
    assert len(healthy.wait_for(len(expected), timeout=60)) == len(expected)
    assert len(refusing.attempts) < len(expected) / 2
    got = flaky.wait_for(len(expected), timeout=120)
    assert {(c["user_id"], c["version"]) for c in got} == expected
    assert len(got) == len(expected)
    assert in_version_order(got)
    assert all(count == 3 for count in flaky.attempts.values())
    assert flaky.unverified == refusing.unverified == healthy.unverified == 0

    assert all(count == 1 for count in healthy.attempts.values())
    deadline = time.monotonic() + 60
    dead: list = []
    while len(dead) < len(expected) and time.monotonic() < deadline:
        dead = read_topic(config, config.deliveries_dlq_topic)
    assert len(dead) == len(expected)
    headers = dict(dead[0].headers())
    assert headers["destination"] == b"refusing"
    assert headers["status"] == b"400"
    assert b"answered 400" in headers["reason"]
    assert all(count == 1 for count in refusing.attempts.values())

    # erasures reach destinations as an exit with reason `erased` and nothing personal
    for user in erased:
        last = [c for c in healthy.changes() if c["user_id"] == user][-1]
        assert last["exited"]
        personal = ("entered", "segments", "cluster", "cart", "reason")
        assert {name: last[name] for name in personal} == {
            "entered": [],
            "segments": [],
            "cluster": None,
            "cart": None,
            "reason": "erased",
        }

    scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    figures = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in scraped.splitlines()
        if line.startswith("segstream_deliver")
    }
    total = float(len(expected))
    assert figures['segstream_deliveries_delivered_total{destination="flaky"}'] == total
    assert figures['segstream_deliveries_retried_total{destination="flaky"}'] == 2 * total
    assert figures['segstream_deliveries_sent_total{destination="flaky"}'] == 3 * total
    refused = 'segstream_deliveries_dead_lettered_total{destination="refusing",status="400"}'
    assert figures[refused] == total
    assert figures['segstream_delivery_latency_seconds_count{destination="flaky"}'] == total
    assert figures['segstream_deliveries_in_flight{destination="flaky"}'] == 0
    assert figures['segstream_deliveries_backlog_changes{destination="flaky"}'] == 0
    assert requests.get(f"http://127.0.0.1:{metrics_port}/readyz", timeout=5).ok
    assert deliverer.stop() == 0


def produce_changes(config: Settings, users: int, versions: range) -> list[dict[str, Any]]:
    """Change events as a worker publishes them: each user enters `A` on odd versions and
    `B` on even ones, leaving the other."""
    producer = reliable_producer(config)
    changes = []
    for version in versions:
        for number in range(users):
            now, previous = ("A", "B") if version % 2 else ("B", "A")
            change = {
                "user_id": f"user-{number}",
                "entered": [now],
                "exited": [previous] if version > 1 else [],
                "segments": [now],
                "cluster": None,
                "previous_cluster": None,
                "version": version,
                "reason": "event",
                "event_time": 1_700_000_000.0 + version,
                "processed_at": time.time(),
                "rules_version": "v1",
                "model_version": None,
                "cart": None,
            }
            changes.append(change)
            producer.produce(
                config.changes_topic, key=change["user_id"].encode(), value=orjson.dumps(change)
            )
    assert producer.flush(30) == 0
    return changes


def _retried_at_least(url: str, destination: str, count: int, timeout: float = 120) -> float:
    """Wait until the deliverer at `url` has retried requests to `destination` `count`
    times; how many it had."""
    deadline = time.monotonic() + timeout
    while True:
        retried = sum(
            sample.value
            for family in text_string_to_metric_families(requests.get(url, timeout=5).text)
            if family.name == "segstream_deliveries_retried"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels["destination"] == destination
        )
        if retried >= count:
            return retried
        assert time.monotonic() < deadline, f"{retried} retries of {count}"
        time.sleep(0.2)


def entering(changes: list[dict[str, Any]], segment: str) -> set[tuple[str, int]]:
    return {(c["user_id"], c["version"]) for c in changes if segment in c["entered"]}


def test_a_receiver_down_a_killed_deliverer_and_a_switched_filter_lose_nothing(
    config, start_worker, tmp_path
):
    config = config.model_copy(
        update={
            "delivery_backoff_seconds": 0.05,
            "delivery_backoff_max_seconds": 1.0,
            "delivery_concurrency": 4,
        }
    )
    ensure_topics(config)
    receiver = Receiver(port=free_port())
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    for path, segment in ((first, "A"), (second, "B")):
        path.write_text(
            f"""destinations:
  - name: crm
    url: {receiver.url}
    secret: {SECRET}
    segments: [{segment}]
    directions: [entered]
    max_attempts: 1000
"""
        )
    before = produce_changes(config, users=60, versions=range(1, 11))
    metrics_port = free_port()
    down = config.model_copy(update={"destinations_file": first, "metrics_port": metrics_port})
    deliverer = start_worker(down, "deliver")
    deliverer.wait_for_log("destinations in force")
    retried = _retried_at_least(f"http://127.0.0.1:{metrics_port}/metrics", "crm", 40)
    assert retried >= 40  # every attempt met a closed port, and was tried again
    receiver.listen()
    got = receiver.wait_for(len(entering(before, "A")), timeout=60)
    assert {(c["user_id"], c["version"]) for c in got} == entering(before, "A")
    assert in_version_order(got)

    applied = segstream(config, "destinations", "apply", str(second))
    assert applied.returncode == 0, applied.stderr
    assert "1 destinations (crm)" in applied.stdout
    deliverer.wait_for_log(f"source={second} (applied")
    receiver.delay = 0.05
    after = produce_changes(config, users=60, versions=range(11, 21))
    wanted = len(got) + len(entering(after, "B"))
    receiver.wait_for(len(got) + 50, timeout=60)
    deliverer.kill()  # mid-stream: offsets of the batch in flight are not committed
    assert len(receiver.changes()) < wanted
    # restarted without the file: the published destinations are in force
    restarted = start_worker(config, "deliver")
    got = receiver.wait_for(wanted, timeout=60)
    assert {(c["user_id"], c["version"]) for c in got} == entering(before, "A") | entering(
        after, "B"
    )
    assert in_version_order(got)
    assert receiver.unverified == 0
    assert restarted.stop() == 0


def test_a_user_whose_webhooks_keep_failing_holds_back_only_their_own_changes(
    config, start_worker, tmp_path
):
    config = config.model_copy(
        update={"delivery_backoff_seconds": 0.05, "delivery_backoff_max_seconds": 0.5}
    )
    ensure_topics(config)
    receiver = Receiver()
    receiver.refused_users.add("user-0")
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(
        f"destinations:\n  - {{name: crm, url: '{receiver.url}', secret: {SECRET}, "
        "max_attempts: 1000}\n"
    )
    first = produce_changes(config, users=30, versions=range(1, 3))
    deliverer = start_worker(
        config.model_copy(update={"destinations_file": destinations}), "deliver"
    )
    others = [c for c in first if c["user_id"] != "user-0"]
    receiver.wait_for(len(others), timeout=60)
    # a later batch: everyone else's changes arrive while user-0's first one is still retried
    second = produce_changes(config, users=30, versions=range(3, 5))
    others += [c for c in second if c["user_id"] != "user-0"]
    got = receiver.wait_for(len(others), timeout=30)
    assert {(c["user_id"], c["version"]) for c in got} == {
        (c["user_id"], c["version"]) for c in others
    }
    assert max(count for count in receiver.attempts.values()) > 3  # user-0, still retried
    receiver.refused_users.clear()
    got = receiver.wait_for(len(first) + len(second), timeout=30)
    assert [c["version"] for c in got if c["user_id"] == "user-0"] == [1, 2, 3, 4]
    assert in_version_order(got)
    assert deliverer.stop() == 0


def test_start_latest_begins_after_what_the_topic_held_when_the_deliverer_first_joined(
    config, start_worker, tmp_path
):
    ensure_topics(config)
    receiver = Receiver()
    hooks = tmp_path / "latest.yaml"
    hooks.write_text(
        f"destinations:\n  - name: fresh\n    url: {receiver.url}\n    secret: {SECRET}\n"
        "    start: latest\n"
    )
    before = produce_changes(config, users=20, versions=range(1, 3))
    deliverer = start_worker(config.model_copy(update={"destinations_file": hooks}), "deliver")
    deliverer.wait_for_log("destinations in force")
    after = produce_changes(config, users=20, versions=range(3, 5))
    got = receiver.wait_for(len(after), timeout=60)
    time.sleep(2)  # anything more would have come by now
    got = receiver.changes()
    assert {(c["user_id"], c["version"]) for c in got} == {
        (c["user_id"], c["version"]) for c in after
    }, f"{len(got)} delivered, {len(before)} before it joined"
    assert deliverer.stop() == 0
