"""The embedded stack: Apache Kafka (KRaft, one node) and Redis on free loopback ports.

Used by `segstream dev`, `segstream demo`, `segstream bench` and the integration tests:
:mod:`~streams.tools.embedded.apache_kafka` runs the broker,
:mod:`~streams.tools.embedded.redis_server` Redis, :mod:`~streams.tools.embedded.stack`
both together, and :mod:`~streams.tools.embedded.processes` the child processes.
"""

from streams.tools.embedded.processes import StackError, free_port, stop_process
from streams.tools.embedded.redis_server import redis_binary, spawn_redis, wait_for_redis
from streams.tools.embedded.stack import Stack, dev_folder, running_stack, start_stack

__all__ = [
    "Stack",
    "StackError",
    "dev_folder",
    "free_port",
    "redis_binary",
    "running_stack",
    "spawn_redis",
    "start_stack",
    "stop_process",
    "wait_for_redis",
]
