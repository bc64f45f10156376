"""Sending a simulation's events somewhere, at a chosen rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import IO, Protocol

from streams.kafka import reliable_producer
from streams.settings import Settings
from streams.tools.replay import REPLAYED
from streams.tools.simulator import SimulatedEvent


class Population(Protocol):
    """A simulated population: shoppers (`Simulation`) or viewers (`MediaSimulation`)."""

    def events(self) -> Iterator[SimulatedEvent]:
        """Every user's events in event-time order."""
        ...

    def truth(self) -> Iterator[dict[str, str]]:
        """Each user's kind, by user id."""
        ...


class Sink(Protocol):
    """Where simulated events go."""

    def write(self, event: SimulatedEvent) -> None:
        """Send one event."""
        ...

    def close(self) -> None:
        """Deliver everything written so far."""
        ...


class FileSink:
    """JSON Lines, one event per line."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def write(self, event: SimulatedEvent) -> None:
        """Append the event's JSON and a newline."""
        self.handle.write(event.value + b"\n")

    def close(self) -> None:
        """Flush the file."""
        self.handle.flush()


class KafkaSink:
    """The events topic, keyed by user id; simulated history counts as replayed."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.events_topic
        self.producer = reliable_producer(settings)

    def write(self, event: SimulatedEvent) -> None:
        """Produce the event; waits for room when the local queue is full."""
        while True:
            try:
                self.producer.produce(
                    self.topic, key=event.key, value=event.value, headers=REPLAYED
                )
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def close(self) -> None:
        """Wait until the broker has acknowledged everything."""
        remaining = self.producer.flush(60)
        if remaining:
            raise RuntimeError(f"{remaining} simulated events were not acknowledged")


def send(
    simulation: Population,
    sink: Sink,
    rate: float,
    duration: float,
    limit: int,
    stop: threading.Event,
) -> int:
    """Write events to `sink` at `rate` per second (0: unthrottled).

    Ends when the history is exhausted, after `duration` seconds (0: no limit),
    after `limit` events (0: no limit), or when `stop` is set. Returns the
    number of events written.
    """
    started = time.monotonic()
    sent = 0
    try:
        for event in simulation.events():
            if limit and sent >= limit:
                break
            if sent % 256 == 0:
                elapsed = time.monotonic() - started
                if stop.is_set() or (duration and elapsed >= duration):
                    break
                if rate:
                    ahead = sent / rate - elapsed
                    if ahead > 0:
                        time.sleep(ahead)
            sink.write(event)
            sent += 1
    finally:
        sink.close()
    return sent
