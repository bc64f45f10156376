"""The naive baseline of `segstream bench`: the obvious Faust design, kept for comparison.

One faust-streaming agent iterates the events topic one event at a time. For
each it validates the event, reads the user from a Faust table, applies the
event and evaluates the rules (the same processors the worker uses), writes
the user back to the table (and so to its changelog topic), writes the
user's labels to Redis, and counts the event in Redis — one network round trip
per event, as such a pipeline is usually first written. It keeps no offsets
with its state, so it is not even effectively-once; it is here only to be
measured.

Run as `python -m streams.tools.bench.naive` with the `SEGSTREAM_*` settings of the run;
the bench stops it with SIGTERM.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import faust
import orjson

from processors._core import run_partition
from processors.classifier import Classifier
from processors.events import Action, decode_event
from processors.partitioner import canonical_partition
from streams.kafka import faust_broker
from streams.redis_clients import redis_client
from streams.rules_feed import load_rules
from streams.settings import Settings

COUNTER = "naive"
"""Field of the stats hash the baseline counts its events in."""


def build_app(settings: Settings) -> faust.App:
    """The baseline Faust app over `settings.events_topic`."""
    app = faust.App(
        f"{settings.group_id}-naive",
        **faust_broker(settings),
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        datadir=Path(tempfile.gettempdir()) / f"segstream-naive-{settings.redis_prefix}",
        autodiscover=False,
    )
    users = app.Table("naive-users", default=bytes, key_type=bytes, value_type=bytes)
    events = app.topic(settings.events_topic, key_type=bytes, value_type=bytes)
    classifier = Classifier.of(load_rules(settings))
    keys = settings.key_layout()
    client = redis_client(settings)
    counted = keys.counters(0)  # the baseline keeps its one total in partition 0's hash
    client.set(keys.partition_count, settings.partitions, nx=True)  # as a worker claims it

    @app.agent(events)
    async def segment(stream: Any) -> None:
        async for key, value in stream.items():
            action = decode_event(value)
            if not isinstance(action, Action):
                client.hincrby(counted, COUNTER, 1)
                continue
            stored = users[key]
            step = run_partition(
                [action],
                {action.user_id: stored} if stored else {},
                classifier.core,
                dedup_before=-math.inf,
            )
            state = step.users[action.user_id]
            users[key] = state.to_bytes()
            client.hset(
                keys.labels(
                    canonical_partition(action.user_id, settings.partitions), action.user_id
                ),
                mapping={
                    "segments": orjson.dumps(state.segments),
                    "version": state.version,
                    "event_time": state.as_of,
                },
            )
            client.hincrby(counted, COUNTER, 1)

    return app


def main() -> None:
    """Run the baseline until SIGTERM."""
    app = build_app(Settings())
    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
