"""Settings come from SEGSTREAM_* variables; a wrong one is named at start-up."""

import pytest

from streams.settings import Settings, SettingsError


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("SEGSTREAM_PARTITIONS", "12")
    monkeypatch.setenv("SEGSTREAM_KAFKA_BOOTSTRAP", "kafka:9092")
    config = Settings()
    assert (config.partitions, config.kafka_bootstrap) == (12, "kafka:9092")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SEGSTREAM_PARTITIONS", "zero"),
        ("SEGSTREAM_BATCH_MAX_EVENTS", "0"),
        ("SEGSTREAM_REDIS_URL", "http://nope"),
        ("SEGSTREAM_EVENTS_TOPIC", "bad topic"),
        ("SEGSTREAM_LOG_LEVEL", "LOUD"),
    ],
)
def test_wrong_value_names_the_setting(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"invalid setting {name}={value}"):
        Settings()


def test_unknown_setting_is_refused(monkeypatch):
    monkeypatch.setenv("SEGSTREAM_PARTITONS", "3")
    with pytest.raises(SettingsError, match="unknown setting SEGSTREAM_PARTITONS"):
        Settings()
