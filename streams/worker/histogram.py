"""A Prometheus histogram that takes a whole batch of observations at once.

prometheus-client's :class:`~prometheus_client.Histogram` takes one value per
call, about a microsecond each; a worker batch has thousands. This one bins an
array with numpy and is exposed like any other histogram.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> registry = CollectorRegistry()
>>> ages = BulkHistogram("demo_age_seconds", "Ages.", (1, 10), registry=registry)
>>> ages.observe_many([0.5, 3, 30])
>>> print(generate_latest(registry).decode().splitlines()[2:6])
['demo_age_seconds_bucket{le="1.0"} 1.0', 'demo_age_seconds_bucket{le="10.0"} 2.0', \
'demo_age_seconds_bucket{le="+Inf"} 3.0', 'demo_age_seconds_count 3.0']
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class BulkHistogram(Collector):
    """Cumulative buckets at `bounds` (ascending, without +Inf), a count and a sum."""

    def __init__(
        self,
        name: str,
        documentation: str,
        bounds: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(bounds, dtype=np.float64)
        self._counts = np.zeros(len(bounds) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: ArrayLike) -> None:
        """Count every value of `values` in its bucket."""
        array = np.asarray(values, dtype=np.float64)
        if not array.size:
            return
        slots = np.searchsorted(self.bounds, array, side="left")
        counts = np.bincount(slots, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(array.sum())

    def collect(self) -> Iterator[Metric]:
        """The histogram as Prometheus exposes it."""
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        labels = [*(repr(float(bound)) for bound in self.bounds), "+Inf"]
        yield HistogramMetricFamily(
            self.name,
            self.documentation,
            buckets=list(zip(labels, cumulative, strict=True)),
            sum_value=total,
        )

    def describe(self) -> Iterator[Metric]:
        """No samples: the registry needs only the name to check for clashes."""
        yield HistogramMetricFamily(self.name, self.documentation)
