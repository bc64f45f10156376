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
        ("SEGSTREAM_KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("SEGSTREAM_KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
        ("SEGSTREAM_PII_ACTION", "encrypt"),
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


def test_sasl_without_credentials_names_what_is_missing(monkeypatch):
    monkeypatch.setenv("SEGSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SEGSTREAM_KAFKA_SASL_USERNAME", "seg")
    with pytest.raises(SettingsError, match="SEGSTREAM_KAFKA_SASL_PASSWORD"):
        Settings()


def test_tls_and_sasl_settings_reach_every_kafka_client(monkeypatch, tmp_path):
    from streams.connectivity import LIBRDKAFKA_LOG, kafka_error
    from streams.kafka import _common, faust_credentials

    ca = tmp_path / "ca.pem"
    ca.write_text("")
    monkeypatch.setenv("SEGSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SEGSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("SEGSTREAM_KAFKA_SASL_USERNAME", "seg")
    monkeypatch.setenv("SEGSTREAM_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("SEGSTREAM_KAFKA_SSL_CA_LOCATION", str(ca))
    config = Settings()
    assert _common(config) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "logger": LIBRDKAFKA_LOG,
        "error_cb": kafka_error,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "seg",
        "sasl.password": "s3cret",
        "ssl.ca.location": str(ca),
    }
    credentials = faust_credentials(config)
    assert (credentials.username, credentials.password) == ("seg", "s3cret")
    assert str(credentials.mechanism.value) == "SCRAM-SHA-256"
    assert "s3cret" not in repr(config)


def test_keys_and_tokens_are_required_outside_dev_mode():
    for name in ("write_keys", "api_tokens"):
        with pytest.raises(SettingsError, match=f"SEGSTREAM_{name.upper()} is empty"):
            Settings().secrets(name)
        assert Settings(dev_mode=True).secrets(name) == ()
        assert Settings(dev_mode=True, **{name: "k"}).secrets(name) == ("k",)
