"""`segstream deliver` against real HTTP receivers: every change once (after de-duplication
by `webhook-id`), in version order per user, signatures verified with `standardwebhooks`;
a refusing receiver fills the dead-letter topic."""

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
from standardwebhooks import Webhook

from streams.tools.embedded import free_port
from streams.tools.simulate import KafkaSink, send
from streams.tools.simulator import Simulation
from tests.integration.conftest import read_topic, wait_for_events

pytestmark = pytest.mark.integration

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class Receiver:
    """A webhook receiver on loopback: it answers `failures` 503s to each `webhook-id`
    before 200, or `status` to everything; it verifies every signature and keeps the
    first delivery of each id, in arrival order."""

    def __init__(self, failures: int = 0, status: int = 200) -> None:
        self.failures = failures
        self.status = status
        self.attempts: dict[str, int] = defaultdict(int)
        self.delivered: dict[str, Any] = {}
        self.unverified = 0
        self.lock = threading.Lock()
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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, body: bytes, headers: dict[str, str]) -> int:
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
            self.delivered.setdefault(identifier, payload["data"])
            return 200

    def changes(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.delivered.values())


def test_a_flaky_receiver_gets_every_change_once_in_order_and_a_refusing_one_dead_letters(
    config, model, start_worker, tmp_path
):
    flaky, refusing = Receiver(failures=2), Receiver(status=400)
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(
        f"""destinations:
  - name: flaky
    url: {flaky.url}
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
    assert worker.stop() == 0
    published = [
        orjson.loads(m.value())
        for m in read_topic(config, config.changes_topic)
        if m.value() is not None
    ]
    expected = {(c["user_id"], c["version"]) for c in published if c["entered"] or c["exited"]}
    assert len(expected) > 40

    os.environ["REFUSING_SECRET"] = SECRET  # the deliverer inherits the test's environment
    try:
        metrics_port = free_port()
        deliverer = start_worker(
            config.model_copy(
                update={"destinations_file": destinations, "metrics_port": metrics_port}
            ),
            "deliver",
        )
    finally:
        del os.environ["REFUSING_SECRET"]
    deadline = time.monotonic() + 180
    while len(flaky.changes()) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.5)
    got = flaky.changes()
    assert {(c["user_id"], c["version"]) for c in got} == expected
    assert len(got) == len(expected)
    by_user: dict[str, list[int]] = defaultdict(list)
    for change in got:
        by_user[change["user_id"]].append(change["version"])
    assert all(versions == sorted(versions) for versions in by_user.values())
    assert all(count == 3 for count in flaky.attempts.values())
    assert flaky.unverified == refusing.unverified == 0

    deadline = time.monotonic() + 60
    dead: list = []
    while len(dead) < len(expected) and time.monotonic() < deadline:
        dead = read_topic(config, config.deliveries_dlq_topic, idle=1.0)
    assert len(dead) == len(expected)
    headers = dict(dead[0].headers())
    assert headers["destination"] == b"refusing"
    assert headers["status"] == b"400"
    assert b"answered 400" in headers["reason"]
    assert all(count == 1 for count in refusing.attempts.values())

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
    assert deliverer.stop() == 0
