"""Kafka over SASL/PLAIN, end to end: every segstream client logs in with the settings.

The embedded broker listens behind a SASL gate (tests/sasl_gate.py) that relays a
connection only after a good login, so the worker's librdkafka clients, the rules and
model feeds, the simulator's producer and the trainer's aiokafka all have to send the
user and password of `SEGSTREAM_KAFKA_SASL_*`.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from streams.kafka import admin_client
from streams.settings import Settings
from streams.tools.embedded import free_port
from tests.integration.conftest import isolated_settings, run_worker_and_trainer, spawn_broker
from tests.sasl_gate import SaslPlainGate

pytestmark = pytest.mark.integration


def test_workers_and_trainer_log_in_over_sasl_plain(stack, tmp_path, start_worker):
    kafka_port, gate_port = free_port(), free_port()
    broker = spawn_broker(kafka_port, gate_port, tmp_path / "broker.log")
    gate = SaslPlainGate({"segstream": "s3cret"}, gate_port, kafka_port)
    try:
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
            run_worker_and_trainer(settings, start_worker)
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
