"""A Redis Cluster on loopback for the bench and the tests: masters of `redis-server`,
created the way an operator creates one (slots assigned, nodes introduced).

Example::

    with running_redis_cluster(Path("/tmp/cluster")) as cluster:
        settings = Settings(redis_url=cluster.url, redis_cluster=True)
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from streams.tools.embedded import free_port, redis_binary, stop_process

SLOTS = 16_384


@dataclass(frozen=True, slots=True)
class RedisCluster:
    """A running cluster: the seed URL clients are given, and every master's port and
    process id."""

    url: str
    ports: tuple[int, ...]
    pids: tuple[int, ...]


@contextmanager
def running_redis_cluster(
    directory: Path, masters: int = 3, timeout: float = 30
) -> Iterator[RedisCluster]:
    """Start `masters` cluster-enabled servers in `directory`, give each an equal share of the
    slots, join them, and wait until every node says the cluster is ok; stop them on exit."""
    ports = tuple(_node_port() for _ in range(masters))
    pids = []
    with ExitStack() as stack:
        for port in ports:
            home = directory / str(port)
            home.mkdir(parents=True, exist_ok=True)
            log = (home / "redis.log").open("wb")
            stack.callback(log.close)
            process = subprocess.Popen(
                [
                    redis_binary(),
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--dir", str(home),
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", "5000",
                    "--appendonly", "no",
                    "--save", "",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            stack.callback(stop_process, process)
            pids.append(process.pid)
        nodes = [redis.Redis("127.0.0.1", port, socket_connect_timeout=1) for port in ports]
        for node in nodes:
            stack.callback(node.close)
            _wait(node.ping, timeout, "a cluster node did not start")
        share = SLOTS // masters
        for index, node in enumerate(nodes):
            last = SLOTS if index == masters - 1 else (index + 1) * share
            node.cluster("ADDSLOTS", *range(index * share, last))
        for port in ports[1:]:
            nodes[0].cluster("MEET", "127.0.0.1", port)
        _wait(lambda: all(_ok(node, masters) for node in nodes), timeout, "the cluster is not ok")
        yield RedisCluster(f"redis://127.0.0.1:{ports[0]}/0", ports, tuple(pids))


_BUS_OFFSET = 10_000
"""A node's cluster bus listens this far above its client port."""


def _node_port() -> int:
    """A free port whose cluster bus port (10,000 higher) is free too."""
    while True:
        port = free_port()
        if port + _BUS_OFFSET < 65_536 and _free(port + _BUS_OFFSET):
            return port


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ok(node: redis.Redis, masters: int) -> bool:
    info = node.cluster("INFO")
    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == masters)


def _wait(ready: Callable[[], object], timeout: float, failure: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except redis.ConnectionError:
            pass
        time.sleep(0.1)
    raise RuntimeError(failure)
