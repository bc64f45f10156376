"""Expected failures of a command as one line: what failed, the setting and value that
pointed there, and what to try; everything else is a bug and keeps its traceback.

>>> import redis
>>> from streams.settings import Settings
>>> refused = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
>>> print(one_line(refused, Settings()))
Redis does not answer at SEGSTREAM_REDIS_URL=redis://127.0.0.1:6379/0 (Error 111 connecting \
to 127.0.0.1:6379. Connection refused.); for the dev stack, run eval "$(segstream dev env)" first
>>> print(one_line(FileNotFoundError(2, "No such file or directory", "rules.yaml"), None))
cannot read rules.yaml: No such file or directory
>>> one_line(ValueError("a bug"), None) is None
True
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
from confluent_kafka import KafkaError, KafkaException

from streams.settings import ENV_PREFIX, Settings

_UNREACHABLE = frozenset(
    {
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TRANSPORT,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
    }
)
"""librdkafka's codes for brokers that cannot be reached."""

_REFUSED = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)
"""librdkafka's codes for credentials or rights the brokers refuse."""

_DEV_HINT = '; for the dev stack, run eval "$(segstream dev env)" first'


def one_line(error: BaseException, settings: Settings | None) -> str | None:
    """The line that explains `error` to whoever ran the command, with the settings in
    force; None for an error that is not an expected failure."""
    if isinstance(error, redis.AuthenticationError) or _refused_by_redis(error):
        return f"Redis refused the credentials in {_setting(settings, 'redis_url')}: {error}"
    if isinstance(error, redis.ConnectionError):
        hint = _hint(settings, "redis_url")
        return f"Redis does not answer at {_setting(settings, 'redis_url')} ({error}){hint}"
    if isinstance(error, KafkaException) and error.args:
        kafka = error.args[0]
        code = kafka.code() if isinstance(kafka, KafkaError) else None
        detail = kafka.str() if isinstance(kafka, KafkaError) else str(kafka)
        where = _setting(settings, "kafka_bootstrap")
        if code in _UNREACHABLE:
            return (
                f"Kafka does not answer at {where} ({detail}){_hint(settings, 'kafka_bootstrap')}"
            )
        if code in _REFUSED:
            user = _setting(settings, "kafka_sasl_username")
            return f"Kafka refused the credentials ({user}) at {where}: {detail}"
    if isinstance(error, OSError) and error.filename is not None:
        return f"cannot read {error.filename}: {error.strerror or error}"
    return None


def _refused_by_redis(error: BaseException) -> bool:
    """A Redis reply that refuses a login (a password where none is set, or a wrong one)."""
    text = str(error)
    return isinstance(error, redis.ResponseError) and (
        "WRONGPASS" in text or "NOAUTH" in text or "without any password configured" in text
    )


def _setting(settings: Settings | None, name: str) -> str:
    """`SEGSTREAM_NAME=value`, a URL without its password."""
    variable = f"{ENV_PREFIX}{name.upper()}"
    if settings is None:
        return variable
    value = str(getattr(settings, name))
    if "://" in value:
        parts = urlsplit(value)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
            value = urlunsplit(parts._replace(netloc=netloc))
    return f"{variable}={value}"


def _hint(settings: Settings | None, name: str) -> str:
    """What to try when a setting is left at its default, which the dev stack's differ from."""
    if settings is None or getattr(settings, name) != Settings.model_fields[name].default:
        return ""
    return _DEV_HINT
