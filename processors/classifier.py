"""What users are labelled with: validated rules, thresholds and the model, for the core.

The rules are validated in Python (:mod:`processors.rules`) and compiled to their
intermediate form; the percentile thresholds they use come from the model
snapshot; the snapshot's scaler and centroids place users, and its ready
predictions' coefficients score them. :class:`Classifier`
hands all three to the compiled core once, and the worker passes it to every
partition step.

>>> from processors.rules import parse_rules
>>> rules = parse_rules("segments:\\n  - {name: S, description: d, condition: "
...                     "{feature: orders_30d, op: '>', value: p50(orders_30d)}}\\n")
>>> classifier = Classifier.of(rules)
>>> classifier.thresholds, classifier.core.min_delay
({}, 1800.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from processors import _core
from processors.model import CLUSTER_FEATURES, FEATURE_INDEX, ClusterAssigner
from processors.rules import RuleSet, percentile_name


class ChangeReason(StrEnum):
    """Why a user's segments changed; carried as `reason` on change events.

    `late`: an event older than the firing clock and its user's latest evaluation, whose
    change corrects what was announced (see docs/event-time.md).
    """

    EVENT = "event"
    LATE = "late"
    TIME = "time"
    MERGE = "merge"
    EXPIRED = "expired"
    ERASED = "erased"
    RULES = "rules"
    MODEL = "model"
    DRIFT = "drift"


@dataclass(frozen=True)
class Classifier:
    """The rules, the clustering model once there is one, and the rules' percentile
    thresholds in the model's population; `core` is the same, compiled, with the
    default clustering features, whose vectors timers refresh as windows slide."""

    rules: RuleSet
    model: ClusterAssigner | None = None
    thresholds: Mapping[str, float] = field(default_factory=dict)
    examples: bool = False
    """Whether users take a point-in-time example at every UTC midnight."""
    core: _core.Classifier = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        placement = None if self.model is None else _placement(self.model)
        predictions = None if self.model is None else self.model.snapshot.scored()
        compiled = _core.Classifier(
            self.rules.ir,
            list(self.thresholds.items()),
            list(CLUSTER_FEATURES),
            placement,
            predictions,
            self.examples,
        )
        object.__setattr__(self, "core", compiled)

    @classmethod
    def of(
        cls, rules: RuleSet, model: ClusterAssigner | None = None, *, examples: bool = False
    ) -> Classifier:
        """The classifier for `rules` and `model`, with the thresholds they give."""
        thresholds = {}
        if model is not None:
            for feature, q in rules.percentiles:
                value = model.snapshot.percentile(feature, q)
                if value is not None:
                    thresholds[percentile_name(feature, q)] = value
        return cls(rules, model, thresholds, examples)


def _placement(model: ClusterAssigner) -> dict[str, Any]:
    """What the core needs of a snapshot to place a feature vector."""
    snapshot = model.snapshot
    return {
        "version": snapshot.version,
        "columns": [FEATURE_INDEX[name] for name in snapshot.features],
        "logged": [name in snapshot.log_features for name in snapshot.features],
        "mean": list(snapshot.mean),
        "std": list(snapshot.std),
        "centroids": [list(cluster.centroid) for cluster in snapshot.clusters],
        "ids": [cluster.id for cluster in snapshot.clusters],
        "events_column": FEATURE_INDEX["events_lifetime"],
        "min_events": float(snapshot.min_events),
    }
