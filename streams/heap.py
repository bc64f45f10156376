"""The cyclic garbage collector, kept off the paths that are timed.

Long-running processes (workers, the API, the collector) call
:func:`quiet_collector` once they have started; the bench generates load
inside :func:`frozen_heap`. Both freeze what lives so far out of the
collector's scans, which otherwise walk it on every full collection. Example::

    app = build_app(settings, producer)
    quiet_collector()
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_YOUNG_OBJECTS = 400_000
"""Tracked objects allocated and not yet freed that start a collection of young objects
(Python's default is 700): more than a batch of 20,000 messages holds at its peak."""


def quiet_collector() -> None:
    """Keep the cyclic garbage collector off the hot path (a worker's batches, a
    service's requests).

    A batch allocates tens of thousands of short-lived objects (messages, items,
    changes) that reference counting frees; at Python's default thresholds the
    collector ran every 700 of them and re-scanned the long-lived ones (modules,
    rules, the model), 11 % of a worker's time. What lives from start-up on is
    frozen out of the scans, and young objects are collected only once more of them
    live than a batch holds: a collection in the middle of a batch walked every
    message, header and item in flight (about 30 ms each time, 5 % of a worker's time
    at 50,000) only to find them all alive.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG_OBJECTS, *gc.get_threshold()[1:])


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep the bench's own heap out of the garbage collector while it generates load.

    By the time the latency phases run, the bench process holds millions of
    objects (sampled ids, drawn events); a full collection over them paused its
    load generator and watcher for tens of milliseconds, which showed up as
    latency of the pipeline. What lives on entering is frozen out of the scans
    (as the worker does for its own start-up objects) and let back on leaving.

    >>> with frozen_heap():
    ...     gc.get_freeze_count() > 0
    True
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
