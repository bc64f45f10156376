"""Kafka over SASL/PLAIN, end to end: every segstream client logs in with the settings.

The embedded broker listens behind a SASL gate (tests/sasl_gate.py) that relays a
connection only after a good login, so the worker's librdkafka clients, the rules and
model feeds, the simulator's producer and the trainer's aiokafka all have to send the
user and password of `SEGSTREAM_KAFKA_SASL_*`.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from state.keys import KeyLayout
from state.model_store import ModelStore
from state.read_model import ReadModel
from streams.embedded import broker_binary, free_port
from streams.kafka import admin_client
from streams.settings import Settings
from streams.simulate import KafkaSink
from streams.simulator import Simulation
from streams.topics import ensure_topics
from tests.integration.conftest import isolated_settings, wait_for_events
from tests.integration.test_tls import wait_for_port
from tests.sasl_gate import SaslPlainGate

pytestmark = pytest.mark.integration


def test_workers_and_trainer_log_in_over_sasl_plain(stack, tmp_path, start_worker):
    kafka_port, gate_port = free_port(), free_port()
    broker = subprocess.Popen(
        [
            broker_binary(),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{kafka_port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{gate_port}",
        ],
        stdout=(tmp_path / "broker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    gate = SaslPlainGate({"segstream": "s3cret"}, gate_port, kafka_port)
    try:
        wait_for_port(kafka_port)
        with gate:
            plain = isolated_settings(stack)
            settings = Settings(
                **{
                    **plain.model_dump(),
                    "kafka_bootstrap": f"127.0.0.1:{gate_port}",
                    "kafka_security_protocol": "SASL_PLAINTEXT",
                    "kafka_sasl_mechanism": "PLAIN",
                    "kafka_sasl_username": "segstream",
                    "kafka_sasl_password": "s3cret",
                    "cluster_min_users": 20,
                    "cluster_k_max": 4,
                    "snapshot_seconds": 1,
                }
            )
            ensure_topics(settings)
            worker = start_worker(settings)
            trainer = start_worker(settings, "trainer")
            sink = KafkaSink(settings)
            sent = 0
            for event in Simulation(users=60, seed=3).events():
                sink.write(event)
                sent += 1
            sink.close()
            client = redis.Redis.from_url(settings.redis_url)
            model = ReadModel(client, KeyLayout(settings.redis_prefix))
            counters = wait_for_events(model, sent, timeout=180)
            assert counters["events"] == sent
            store = ModelStore(client, KeyLayout(settings.redis_prefix))
            deadline = time.monotonic() + 120
            while store.latest() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            assert store.latest() is not None, trainer.log.read_text()[-3000:]
            assert worker.stop() == 0
            assert trainer.stop() == 0
            assert gate.logins > 0
            assert gate.refusals == 0

            # A wrong password, or no SASL at all, gets no further than the gate.
            wrong = settings.model_copy(update={"kafka_sasl_password": SecretStr("guess")})
            with pytest.raises(KafkaException):
                admin_client(wrong).list_topics(timeout=3)
            assert gate.refusals > 0
            with pytest.raises(KafkaException):
                AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=3)
    finally:
        broker.terminate()
        broker.wait(10)
