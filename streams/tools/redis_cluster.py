"""A Redis Cluster on loopback for the bench and the tests: masters of `redis-server`, and
replicas of them if asked, created the way an operator creates one (slots assigned, nodes
introduced, replicas attached).

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
    """A running cluster: the seed URL clients are given, every master's port and process
    id, and its replicas' (the replicas of master `i` at `i * replicas …`)."""

    url: str
    ports: tuple[int, ...]
    pids: tuple[int, ...]
    replica_ports: tuple[int, ...] = ()
    replica_pids: tuple[int, ...] = ()


@contextmanager
def running_redis_cluster(
    directory: Path, masters: int = 3, timeout: float = 30, replicas: int = 0
) -> Iterator[RedisCluster]:
    """Start `masters` cluster-enabled servers in `directory`, give each an equal share of the
    slots, join them, attach `replicas` more servers to each as its replicas, and wait until
    every node says the cluster is ok and every replica is in sync; stop them on exit."""
    chosen = _node_ports(masters * (1 + replicas))
    ports, replica_ports = chosen[:masters], chosen[masters:]
    with ExitStack() as stack:
        pids = [_start_node(stack, directory, port) for port in ports]
        replica_pids = [_start_node(stack, directory, port) for port in replica_ports]
        nodes = [_client(port) for port in ports]
        copies = [_client(port) for port in replica_ports]
        for node in [*nodes, *copies]:
            stack.callback(node.close)
            _wait(node.ping, timeout, "a cluster node did not start")
        share = SLOTS // masters
        for index, node in enumerate(nodes):
            last = SLOTS if index == masters - 1 else (index + 1) * share
            node.cluster("ADDSLOTS", *range(index * share, last))
        for port in [*ports[1:], *replica_ports]:
            nodes[0].cluster("MEET", "127.0.0.1", port)
        everyone = [*nodes, *copies]
        _wait(lambda: all(_known(node, len(everyone)) for node in everyone), timeout, "no meeting")
        for index, copy in enumerate(copies):  # every node knows every other by now
            copy.cluster("REPLICATE", nodes[index // replicas].cluster("MYID"))
        _wait(lambda: all(_ok(node, len(everyone)) for node in everyone), timeout, "not ok")
        _wait(lambda: all(_in_sync(copy) for copy in copies), timeout, "a replica is not in sync")
        yield RedisCluster(
            f"redis://127.0.0.1:{ports[0]}/0",
            ports,
            tuple(pids),
            replica_ports,
            tuple(replica_pids),
        )


def _client(port: int) -> redis.Redis:
    return redis.Redis("127.0.0.1", port, socket_connect_timeout=1)


def _start_node(stack: ExitStack, directory: Path, port: int) -> int:
    """Start one cluster-enabled `redis-server` on `port`, stopped when `stack` closes; its
    process id."""
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
    return process.pid


_BUS_OFFSET = 10_000
"""A node's cluster bus listens this far above its client port."""


def _node_ports(count: int) -> tuple[int, ...]:
    """`count` free ports whose bus ports are free too, none of them another's bus port (a
    node whose port is another's bus port cannot start)."""
    chosen: list[int] = []
    taken: set[int] = set()
    while len(chosen) < count:
        port = _node_port()
        if port not in taken and port + _BUS_OFFSET not in taken:
            chosen.append(port)
            taken |= {port, port + _BUS_OFFSET}
    return tuple(chosen)


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


def _known(node: redis.Redis, count: int) -> bool:
    return int(node.cluster("INFO")["cluster_known_nodes"]) == count


def _ok(node: redis.Redis, count: int) -> bool:
    info = node.cluster("INFO")
    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == count)


def _in_sync(replica: redis.Redis) -> bool:
    info = replica.info("replication")
    return bool(info["role"] == "slave" and info.get("master_link_status") == "up")


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
