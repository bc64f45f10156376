"""Kafka over SASL/SCRAM, end to end: every segstream client logs in with the settings.

Apache Kafka's own SASL listener, with SCRAM users created when its storage was
formatted (streams/tools/embedded/apache_kafka.py), so the worker's librdkafka clients, the rules and
model feeds, the simulator's producer and the trainer's aiokafka all have to send the
user and password of `SEGSTREAM_KAFKA_SASL_*` and get through SCRAM's challenge.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from streams.kafka import admin_client
from streams.settings import Settings
from tests.integration.conftest import SCRAM_USERS, isolated_settings, run_worker_and_trainer

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_workers_and_trainer_log_in_over_sasl_scram(stack, start_worker, mechanism):
    ((user, password),) = SCRAM_USERS.items()
    plain = isolated_settings(stack)
    settings = Settings(
        **{
            **plain.model_dump(),
            "kafka_bootstrap": stack.kafka_sasl_bootstrap,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": mechanism,
            "kafka_sasl_username": user,
            "kafka_sasl_password": password,
            "cluster_min_users": 20,
            "cluster_k_max": 4,
            "snapshot_seconds": 1,
        }
    )
    run_worker_and_trainer(settings, start_worker)

    # A wrong password, or no SASL at all, gets nothing from the SASL listener.
    wrong = settings.model_copy(update={"kafka_sasl_password": SecretStr("guess")})
    with pytest.raises(KafkaException):
        admin_client(wrong).list_topics(timeout=3)
    with pytest.raises(KafkaException):
        AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=3)
