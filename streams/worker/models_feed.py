"""Model snapshots on the compacted models topic, and the workers' view of them.

The trainer publishes every snapshot under one key; a worker takes a newer
valid one at its next batch. A corrupt snapshot is refused, counted and
logged, and the previous one stays in force.
"""

from __future__ import annotations

import logging

from processors.model import ModelSnapshot, SnapshotError, parse_snapshot
from streams.compacted_feed import CompactedFeed
from streams.settings import Settings
from streams.worker import metrics

log = logging.getLogger(__name__)


class ModelsFeed(CompactedFeed[ModelSnapshot]):
    """Follows the models topic: newer valid snapshots."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.models_topic)
        self.version = 0

    def accept(self, value: bytes) -> ModelSnapshot | None:
        """The snapshot `value` holds, if valid and newer than the one in force."""
        try:
            snapshot = parse_snapshot(value)
        except SnapshotError as error:
            metrics.MODELS_REFUSED.inc()
            log.error("model snapshot refused, the previous one stays in force: %s", error)
            return None
        if snapshot.version <= self.version:
            return None
        self.version = snapshot.version
        return snapshot
