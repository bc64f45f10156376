"""The read API's Redis lane against real Redis servers: replies in order under concurrency,
errors, a killed connection, a Redis that stops answering, TLS with an ACL user."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import uvloop

from state.lane import Lane
from streams.tools.embedded import free_port, spawn_redis, wait_for_redis
from tests.integration.test_tls import certificates, server_context  # noqa: F401
from tests.tls_proxy import TlsProxy

pytestmark = pytest.mark.integration


def _lane(url: str, timeout: float = 5.0) -> Lane:
    return Lane(aioredis.ConnectionPool.from_url(url), timeout)


def test_concurrent_reads_get_their_own_replies_and_errors_are_raised(stack):
    client = redis.Redis.from_url(stack.redis_url)
    for index in range(300):
        client.hset(f"lane-test:h:{index}", mapping={"index": index, "even": index % 2})
        client.set(f"lane-test:s:{index}", f"value-{index}")

    async def read_all() -> None:
        lane = _lane(stack.redis_url)
        hashes, strings = await asyncio.gather(
            asyncio.gather(*(lane.hgetall(f"lane-test:h:{i}") for i in range(300))),
            asyncio.gather(*(lane.get(f"lane-test:s:{i}") for i in range(300))),
        )
        assert hashes == [{b"index": b"%d" % i, b"even": b"%d" % (i % 2)} for i in range(300)]
        assert strings == [b"value-%d" % i for i in range(300)]
        assert await lane.hgetall("lane-test:none") == {}
        assert await lane.get("lane-test:none") is None
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            await lane.hgetall("lane-test:s:0")
        assert await lane.get("lane-test:s:1") == b"value-1"  # still in step after an error
        await lane.close()

    uvloop.run(read_all())


def test_a_killed_connection_fails_its_waiters_and_the_next_read_reconnects(stack):
    admin = redis.Redis.from_url(stack.redis_url)
    admin.set("lane-test:k", "v")

    async def kill_and_read() -> None:
        lane = _lane(stack.redis_url)
        lane_id = await lane.execute("CLIENT", "ID")
        admin.execute_command("CLIENT", "KILL", "ID", lane_id)
        await asyncio.sleep(0.2)
        assert await lane.get("lane-test:k") == b"v"
        assert await lane.execute("CLIENT", "ID") != lane_id
        await lane.close()

    uvloop.run(kill_and_read())


def test_a_redis_that_stops_answering_fails_the_waiting_read_after_the_timeout(tmp_path: Path):
    """A Redis of its own paused for a minute: the read fails after the lane's half-second
    timeout, long before the pause could end (and no other test waits on the pause)."""
    port = free_port()
    server = spawn_redis(tmp_path, port)
    try:
        url = f"redis://127.0.0.1:{port}"
        wait_for_redis(url, server)
        admin = redis.Redis.from_url(url)

        async def read_paused() -> float:
            lane = _lane(url, timeout=0.5)
            assert await lane.get("lane-test:none") is None
            admin.execute_command("CLIENT", "PAUSE", 60_000, "ALL")
            started = time.monotonic()
            try:
                with pytest.raises(redis.ConnectionError):
                    await lane.get("lane-test:none")
                return time.monotonic() - started
            finally:
                await lane.close()

        waited = uvloop.run(read_paused())
        assert 0.4 < waited < 30
    finally:
        server.kill()
        server.wait(10)


def test_a_lane_reads_over_tls_as_an_acl_user(certificates, tmp_path: Path):  # noqa: F811
    port, tls_port = free_port(), free_port()
    (tmp_path / "redis").mkdir()
    server = spawn_redis(tmp_path / "redis", port)
    proxy = TlsProxy(server_context(certificates, client_certificates=False), tls_port, port)
    try:
        wait_for_redis(f"redis://127.0.0.1:{port}/0", server)
        admin = redis.Redis(port=port)
        admin.acl_setuser("reader", enabled=True, passwords=["+s3cret"], keys=["~*"],
                          commands=["+@read", "+client", "+acl|whoami"])  # fmt: skip
        admin.acl_setuser("default", enabled=False)
        with proxy:
            url = f"rediss://reader:s3cret@127.0.0.1:{tls_port}/0?ssl_ca_certs={certificates['ca']}"

            async def read() -> tuple[bytes, dict[bytes, bytes]]:
                lane = _lane(url)
                try:
                    return await lane.execute("ACL", "WHOAMI"), await lane.hgetall("lane:none")
                finally:
                    await lane.close()

            assert uvloop.run(read()) == (b"reader", {})
            assert proxy.handshakes == 1
    finally:
        server.terminate()
        server.wait(10)
