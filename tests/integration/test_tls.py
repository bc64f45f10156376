"""Kafka over mutual TLS and Redis over TLS with an ACL user, end to end.

The broker and Redis listen on plain TCP behind TLS terminators (as behind a TLS
listener or stunnel), so every segstream client below runs real handshakes: the
worker's and the producer's librdkafka, the trainer's aiokafka and every redis-py.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import redis
import trustme
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.settings import Settings
from streams.tools.embedded import free_port, spawn_redis, stop_process, wait_for_redis
from streams.tools.embedded.apache_kafka import spawn_kafka, wait_until_serving
from tests.integration.conftest import isolated_settings, run_worker_and_trainer
from tests.tls_proxy import TlsProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def certificates(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    authority = trustme.CA()
    server = authority.issue_cert("127.0.0.1")
    client = authority.issue_cert("segstream-worker")
    files = {
        "ca": tmp_path / "ca.pem",
        "server": tmp_path / "server.pem",
        "client_cert": tmp_path / "client.pem",
        "client_key": tmp_path / "client.key",
    }
    authority.cert_pem.write_to_path(str(files["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(files["server"]))
    client.cert_chain_pems[0].write_to_path(str(files["client_cert"]))
    client.private_key_pem.write_to_path(str(files["client_key"]))
    return files


def server_context(certificates: dict[str, Path], *, client_certificates: bool):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates["server"])
    if client_certificates:
        context.load_verify_locations(certificates["ca"])
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_workers_and_trainer_run_over_kafka_mtls_and_redis_tls(
    stack, certificates, tmp_path, start_worker
):
    kafka_port, kafka_tls_port = free_port(), free_port()
    broker, _ = spawn_kafka(tmp_path / "kafka", port=kafka_port, advertised=kafka_tls_port)
    redis_port, redis_tls_port = free_port(), free_port()
    (tmp_path / "redis").mkdir()
    server = spawn_redis(tmp_path / "redis", redis_port)
    kafka_proxy = TlsProxy(
        server_context(certificates, client_certificates=True), kafka_tls_port, kafka_port
    )
    redis_proxy = TlsProxy(
        server_context(certificates, client_certificates=False), redis_tls_port, redis_port
    )
    try:
        wait_for_redis(f"redis://127.0.0.1:{redis_port}/0", server)
        wait_until_serving(f"127.0.0.1:{kafka_port}", broker)
        admin = redis.Redis(port=redis_port)
        admin.acl_setuser("segstream", enabled=True, passwords=["+s3cret"], keys=["~*"],
                          channels=["*"], commands=["+@all"])  # fmt: skip
        admin.acl_setuser("default", enabled=False)
        with kafka_proxy, redis_proxy:
            plain = isolated_settings(stack)
            settings = Settings(
                **{
                    **plain.model_dump(),
                    "kafka_bootstrap": f"127.0.0.1:{kafka_tls_port}",
                    "kafka_security_protocol": "SSL",
                    "kafka_ssl_ca_location": certificates["ca"],
                    "kafka_ssl_certificate_location": certificates["client_cert"],
                    "kafka_ssl_key_location": certificates["client_key"],
                    "redis_url": f"rediss://segstream:s3cret@127.0.0.1:{redis_tls_port}/0"
                    f"?ssl_ca_certs={certificates['ca']}",
                    "cluster_min_users": 20,
                    "cluster_k_max": 4,
                    "snapshot_seconds": 1,
                }
            )
            run_worker_and_trainer(settings, start_worker)

            # Both terminators carried the traffic, and neither takes clients without TLS.
            assert kafka_proxy.handshakes > 0
            assert redis_proxy.handshakes > 0
            with pytest.raises(redis.ConnectionError):
                redis.Redis(port=redis_tls_port, socket_timeout=2).ping()
            without_certificate = AdminClient(
                {
                    "bootstrap.servers": settings.kafka_bootstrap,
                    "security.protocol": "SSL",
                    "ssl.ca.location": str(certificates["ca"]),
                }
            )
            with pytest.raises(KafkaException):
                without_certificate.list_topics(timeout=3)
    finally:
        stop_process(broker)
        stop_process(server)
