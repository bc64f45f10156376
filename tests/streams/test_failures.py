"""The one line each expected failure of a command gets (streams.failures)."""

from __future__ import annotations

import redis
from confluent_kafka import KafkaError, KafkaException

from streams.failures import one_line
from streams.settings import Settings


def test_refused_credentials_name_the_setting_and_hide_the_password():
    settings = Settings(redis_url="redis://app:hunter2@10.0.0.5:6379/0")
    refused = redis.AuthenticationError("invalid username-password pair or user is disabled.")
    line = one_line(refused, settings)
    assert line is not None
    assert line.startswith("Redis refused the credentials in SEGSTREAM_REDIS_URL=")
    assert "app:***@10.0.0.5" in line
    assert "hunter2" not in line
    no_password_set = redis.ResponseError(
        "AUTH <password> called without any password configured for the default user."
    )
    assert (one_line(no_password_set, settings) or "").startswith("Redis refused")
    sasl = KafkaException(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED, "bad password"))
    line = one_line(sasl, Settings(kafka_bootstrap="kafka:9093", kafka_sasl_username="app"))
    assert line == (
        "Kafka refused the credentials (SEGSTREAM_KAFKA_SASL_USERNAME=app) at "
        "SEGSTREAM_KAFKA_BOOTSTRAP=kafka:9093: bad password"
    )


def test_the_dev_stack_is_suggested_only_for_the_default_addresses():
    down = KafkaException(KafkaError(KafkaError._ALL_BROKERS_DOWN, "all brokers down"))
    assert 'eval "$(segstream dev env)"' in (one_line(down, Settings()) or "")
    elsewhere = one_line(down, Settings(kafka_bootstrap="kafka:9092"))
    assert (
        elsewhere
        == "Kafka does not answer at SEGSTREAM_KAFKA_BOOTSTRAP=kafka:9092 (all brokers down)"
    )


def test_anything_else_keeps_its_traceback():
    assert one_line(KeyError("x"), Settings()) is None
    other = KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "no topic"))
    assert one_line(other, Settings()) is None
    assert one_line(OSError("no file name"), None) is None
