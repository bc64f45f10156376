"""The bench's webhook figures: `segstream deliver` against receivers on loopback.

- `deliveries_per_second`: one deliverer sending the one-worker run's changes to
  a healthy receiver, from its first request to the `webhook_changes`-th change;
- `flaky_receiver_seconds`: from the first request to the `flaky_changes`-th
  change taken by a receiver that answers 503 twice to each `webhook-id` before
  200, with the default backoff;
- `time_to_act_p50_ms`, `time_to_act_p99_ms`: a worker and a deliverer with
  the shipped settings (lateness, firing delay and idle detection as shipped)
  under live load stamped with the wall clock; probe users put a product in
  their cart and do nothing more, and each is timed from the moment its cart
  became abandoned (its time, in the whole seconds profiles keep, plus
  `cart_abandonment_after`, one minute here) to
  its `Cart Abandoners` webhook at a healthy receiver. Every partition is busy,
  so the firing clock passes that moment the firing delay later;
- `quiet_time_to_act_p50_ms`, `quiet_time_to_act_p99_ms`: meanwhile, the same
  pipeline on a topic of its own where each partition gets one lone cart and
  nothing else: the partition falls quiet, its firing clock follows the wall
  clock after `SEGSTREAM_IDLE_WATERMARK_SECONDS`, and the cart is announced.

The receivers run on an event loop of their own in this process::

    with Receiver(failures=2) as receiver:
        ...  # point a destination at receiver.url
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import TopicPartition

from processors.partitioner import canonical_partition
from streams.heap import frozen_heap
from streams.kafka import reliable_producer, topic_reader
from streams.settings import Settings, default_rules_file
from streams.tools.bench.parts import (
    Processes,
    live_events,
    percentiles,
    wait_for_http,
)
from streams.tools.embedded import free_port

_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
_ABANDONED_AFTER = 60.0
"""The act rules' `cart_abandonment_after`, in seconds: the shortest a rule file allows."""
_PROBE_EVERY = 200
"""One event in this many is a probe's cart in the time-to-act phase."""
_POLL = 0.05
_STALL = 30.0
"""Seconds without a new probe's webhook after which the time-to-act phase gives up."""


class Receiver:
    """A webhook receiver on loopback: `failures` 503s to each `webhook-id`, then 200; it
    notes when each id was first taken (monotonic seconds) with the change it carried."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.attempts: dict[str, int] = {}
        self.taken: dict[str, tuple[float, Any]] = {}
        self.first_request: float | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._serve, name="receiver", daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the bench's webhook receiver did not start")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def wait_for(self, count: int, timeout: float) -> list[float]:
        """The sorted first-taken times once `count` changes were taken; raises on timeout."""
        deadline = time.monotonic() + timeout
        while len(self.taken) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the receiver took {len(self.taken)} of {count} changes")
            time.sleep(_POLL)
        return sorted(moment for moment, _ in list(self.taken.values()))

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.monotonic()
        if self.first_request is None:
            self.first_request = now
        identifier = request.headers["webhook-id"]
        attempt = self.attempts.get(identifier, 0) + 1
        self.attempts[identifier] = attempt
        if attempt <= self.failures:
            return web.Response(status=503)
        if identifier not in self.taken:
            self.taken[identifier] = (now, orjson.loads(body)["data"])
        return web.Response(status=200)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_until_complete(self._stop.wait())
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()


def _with_destination(
    settings: Settings, scratch: Path, name: str, url: str, more: str = ""
) -> Settings:
    path = scratch / f"destinations-{name}.yaml"
    path.write_text(
        f"destinations:\n  - name: {name}\n    url: {url}\n    secret: {_SECRET}\n{more}"
    )
    return settings.model_copy(update={"destinations_file": path})


def changes_on(settings: Settings, enough: int) -> int:
    """How many change events the change topic holds (its partitions' high watermarks:
    the topic is not compacted, and its producers are idempotent, not transactional),
    counting up to `enough`."""
    reader = topic_reader(settings, f"{settings.group_id}-bench-count")
    try:
        topic = settings.changes_topic
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        found = 0
        for partition in partitions:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            found += high - low
        return min(found, enough)
    finally:
        reader.close()


def _deliver_to(
    processes: Processes,
    settings: Settings,
    scratch: Path,
    receiver: Receiver,
    wanted: int,
    timeout: float,
) -> list[float]:
    """Run one deliverer with `receiver` as its one destination until it took `wanted`
    changes; their sorted first-taken times."""
    name = f"receiver-{receiver.port}"
    deliverer = processes.start(
        _with_destination(settings, scratch, name, receiver.url), name, "streams", "deliver"
    )
    try:
        return receiver.wait_for(wanted, timeout)
    finally:
        processes.stop(deliverer)


def deliveries_per_second(
    processes: Processes, settings: Settings, scratch: Path, wanted: int, timeout: float
) -> float:
    """Changes per second one deliverer sends to a healthy receiver."""
    with Receiver() as receiver:
        taken = _deliver_to(processes, settings, scratch, receiver, wanted, timeout)
    return (wanted - 1) / max(taken[wanted - 1] - taken[0], 1e-9) if wanted > 1 else 0.0


def flaky_receiver_seconds(
    processes: Processes, settings: Settings, scratch: Path, wanted: int, timeout: float
) -> float:
    """Seconds until a receiver answering 503 twice before each 200 took `wanted` changes."""
    with Receiver(failures=2) as receiver:
        taken = _deliver_to(processes, settings, scratch, receiver, wanted, timeout)
    assert receiver.first_request is not None
    return taken[wanted - 1] - receiver.first_request


@contextlib.contextmanager
def _acting(
    processes: Processes, settings: Settings, scratch: Path, name: str
) -> Iterator[tuple[Settings, Receiver]]:
    """A worker with carts abandoned after `_ABANDONED_AFTER` (every setting else as
    shipped) and a deliverer sending `Cart Abandoners` entries to a receiver; the
    settings they run with and the receiver."""
    rules = scratch / "act-rules.yaml"
    shipped = default_rules_file().read_text(encoding="utf-8")
    abandonment = f"cart_abandonment_after: {_ABANDONED_AFTER / 60:.0f}m"
    rules.write_text(shipped.replace("cart_abandonment_after: 30m", abandonment))
    settings = settings.model_copy(update={"rules_file": rules})
    worker_port, deliver_port = free_port(), free_port()
    with Receiver() as receiver:
        act = _with_destination(
            settings,
            scratch,
            name,
            receiver.url,
            "    segments: [Cart Abandoners]\n    directions: [entered]\n    reasons: [time]\n",
        )
        worker = processes.start(
            settings.model_copy(update={"metrics_port": worker_port}),
            f"{name}-worker",
            "streams",
            "worker",
        )
        deliverer = processes.start(
            act.model_copy(update={"metrics_port": deliver_port}),
            f"{name}-deliver",
            "streams",
            "deliver",
        )
        try:
            wait_for_http(f"http://127.0.0.1:{worker_port}/readyz", worker)
            wait_for_http(f"http://127.0.0.1:{deliver_port}/readyz", deliverer)
            yield settings, receiver
        finally:
            processes.stop(deliverer)
            processes.stop(worker)


@dataclass(frozen=True, slots=True)
class ActFigures:
    """Time to act in ms on busy partitions and on quiet ones, and the probes timed."""

    busy_p50_ms: float
    busy_p99_ms: float
    busy_probes: int
    quiet_p50_ms: float
    quiet_p99_ms: float
    quiet_probes: int


def time_to_act(
    processes: Processes,
    busy: Settings,
    quiet: Settings,
    scratch: Path,
    rate: float,
    seconds: float,
) -> ActFigures:
    """Time to act on the busy partitions of `busy`'s events topic, under live load at
    `rate`/s with probes for `seconds`, and meanwhile on `quiet`'s, each of whose partitions
    gets one lone cart (see the module)."""
    partitions = quiet.partitions
    with _acting(processes, quiet, scratch, "quiet") as (quiet, lonely):
        lone = _lone_carts(quiet, _one_user_a_partition(partitions))
        with _acting(processes, busy, scratch, "act") as (busy, receiver):
            _warm_up(busy, receiver)
            due = _live_with_probes(busy, rate, seconds)
            timed = {user: at for user, at in due.items() if at <= time.monotonic() - 0.5}
            arrived = _await_arrivals(receiver, timed)
        quiet_arrived = _await_arrivals(lonely, lone)
    for name, wanted, got in [("probes", timed, arrived), ("lone carts", lone, quiet_arrived)]:
        if len(got) < len(wanted):
            raise TimeoutError(f"{len(wanted) - len(got)} of {len(wanted)} {name} got no webhook")
    busy_p50, busy_p99 = percentiles([arrived[user] - timed[user] for user in timed])
    quiet_p50, quiet_p99 = percentiles([quiet_arrived[user] - lone[user] for user in lone])
    return ActFigures(busy_p50, busy_p99, len(timed), quiet_p50, quiet_p99, len(lone))


def _lone_carts(settings: Settings, users: list[str]) -> dict[str, float]:
    """One cart of each of `users`, half a second apart and nothing else; for each, the
    monotonic moment it becomes abandoned."""
    producer = reliable_producer(settings)
    due: dict[str, float] = {}
    for user in users:
        now, moment = time.monotonic(), time.time()
        producer.produce(settings.events_topic, key=user.encode(), value=_cart(user, moment))
        producer.flush(10)
        due[user] = _abandoned_at(now, moment)
        time.sleep(0.5)
    return due


def _abandoned_at(sent: float, moment: float) -> float:
    """The monotonic moment a cart stamped `moment` (epoch seconds), sent at monotonic
    `sent`, becomes abandoned: profiles keep event times in whole seconds, so its time is
    the second it began.

    >>> _abandoned_at(100.0, 1_790_000_000.75)
    159.25
    """
    return sent + math.floor(moment) + _ABANDONED_AFTER - moment


def _one_user_a_partition(partitions: int) -> list[str]:
    """A user id of each of `partitions`, in partition order.

    >>> [canonical_partition(user, 4) for user in _one_user_a_partition(4)]
    [0, 1, 2, 3]
    """
    found: dict[int, str] = {}
    for number in itertools.count():
        user = f"lone-cart-{number}"
        found.setdefault(canonical_partition(user, partitions), user)
        if len(found) == partitions:
            return [found[partition] for partition in range(partitions)]
    raise AssertionError("unreachable")


def _await_arrivals(receiver: Receiver, users: dict[str, float]) -> dict[str, float]:
    """When each of `users` got its webhook, waiting as long as webhooks keep arriving (a
    pipeline that lags behind the live load still delivers every probe; one that stalls for
    `_STALL` seconds has lost some)."""
    arrived = _arrivals(receiver, users)
    progress = time.monotonic()
    while len(arrived) < len(users) and time.monotonic() - progress < _STALL:
        time.sleep(_POLL)
        now = _arrivals(receiver, users)
        if len(now) > len(arrived):
            progress = time.monotonic()
        arrived = now
    return arrived


def _arrivals(receiver: Receiver, users: dict[str, float]) -> dict[str, float]:
    """When each of `users` got its webhook."""
    return {
        change["user_id"]: moment
        for moment, change in list(receiver.taken.values())
        if change["user_id"] in users
    }


def _cart(user: str, moment: float) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": "Product Added",
            "userId": user,
            "timestamp": datetime.fromtimestamp(moment, UTC).isoformat(),
            "properties": {
                "product_id": "sho-001",
                "category": "shoes",
                "price": 20.0,
                "quantity": 1,
            },
        }
    )


def _warm_up(settings: Settings, receiver: Receiver) -> None:
    """Abandon one cart end to end, so that the worker, the deliverer and the receiver are
    all under way: a cart left `_ABANDONED_AFTER` and the firing delay ago, then a page now
    that moves its partition's firing clock past the abandonment."""
    producer = reliable_producer(settings)
    now = time.time()
    added = now - _ABANDONED_AFTER - settings.firing_delay_seconds - 1
    page = {
        "type": "page",
        "userId": "warm-up",
        "timestamp": datetime.fromtimestamp(now, UTC).isoformat(),
    }
    producer.produce(settings.events_topic, key=b"warm-up", value=_cart("warm-up", added))
    producer.produce(settings.events_topic, key=b"warm-up", value=orjson.dumps(page))
    producer.flush(10)
    deadline = time.monotonic() + 120
    while not _arrivals(receiver, {"warm-up": 0.0}):
        if time.monotonic() > deadline:
            raise TimeoutError("the warm-up cart got no webhook")
        time.sleep(_POLL)


def _live_with_probes(settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    """Produce live events, stamped with the wall clock, at `rate`/s; for `seconds` every
    `_PROBE_EVERY`th is a probe's cart, and the load goes on until every probe's cart is
    abandoned and the firing delay past. Returns, for each probe, the monotonic moment its
    cart became abandoned."""
    producer = reliable_producer(settings, **{"linger.ms": 1})
    drawn = live_events(users=10_000, seed=11)
    load_seconds = seconds + _ABANDONED_AFTER + settings.firing_delay_seconds + 2
    source = iter(list(itertools.islice(drawn, int(rate * load_seconds) + 1)))
    due: dict[str, float] = {}
    begin = time.monotonic()
    sent = 0
    with frozen_heap():
        while (now := time.monotonic()) - begin < load_seconds:
            moment = time.time()
            stamp = datetime.fromtimestamp(moment, UTC).isoformat().encode()
            while sent < int((now - begin) * rate):
                key, head = next(source)
                if sent % _PROBE_EVERY == 0 and now - begin < seconds:
                    user = f"cart-probe-{sent // _PROBE_EVERY}"
                    key, value = user.encode(), _cart(user, moment)
                    due[user] = _abandoned_at(now, moment)
                else:
                    value = head + stamp + b'"}'
                producer.produce(settings.events_topic, key=key, value=value)
                sent += 1
            producer.poll(0)
            time.sleep(0.01)
    producer.flush(30)
    return due
