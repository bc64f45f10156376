"""Labelled point-in-time examples and their wire form on the `examples` topic.

At every UTC midnight `D` of event time each live user takes a snapshot of the
prediction inputs and of the predictions made then; the first labelling midnight
(every 7th day) 30 and 90 days on labels it from the user's state
(docs/predictions.md), and the worker
publishes the labelled examples, many to a message, which the core packs
(`processors/core/src/examples.rs`). An example is known by its user, prediction
and day; a batch done again after a failure publishes the same ones again,
which :class:`Deduplicator` lets through once.

>>> import msgpack
>>> row = ["u1", "purchase_30d", 20_000, 20_030, [0.0] * len(PREDICTION_INPUTS), None, 1.0]
>>> message = msgpack.packb({"inputs": list(PREDICTION_INPUTS), "rows": [row]})
>>> [(e.user_id, e.prediction, e.day, e.predicted, e.label) for e in unpack_examples(message)]
[('u1', 'purchase_30d', 20000, None, 1.0)]
>>> unpack_examples(b"nonsense")
Traceback (most recent call last):
...
processors.examples.ExampleError: not an examples message
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from processors._core import PREDICTION_INPUTS, PREDICTIONS

__all__ = ["Deduplicator", "Example", "ExampleError", "unpack_examples"]


class ExampleError(ValueError):
    """An examples message that cannot be read."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled example: the inputs (:data:`PREDICTION_INPUTS` order) and the
    prediction made at the UTC midnight starting `day`, the day whose midnight labelled
    it (`matured`), and the outcome: 1 or 0 for a probability, an amount for
    `revenue_90d`."""

    user_id: str
    prediction: str
    day: int
    matured: int
    inputs: tuple[float, ...]
    predicted: float | None
    label: float

    @property
    def key(self) -> tuple[str, str, int]:
        """What the example is known by."""
        return self.user_id, self.prediction, self.day


def unpack_examples(message: bytes) -> list[Example]:
    """The examples in a message, inputs put in :data:`PREDICTION_INPUTS` order."""
    try:
        document: Any = msgpack.unpackb(message)
        names, rows = list(document["inputs"]), document["rows"]
    except (TypeError, KeyError, ValueError, msgpack.UnpackException):
        raise ExampleError("not an examples message") from None
    missing = [name for name in PREDICTION_INPUTS if name not in names]
    if missing:
        raise ExampleError(f"inputs this trainer needs are missing: {missing[:5]}")
    columns = [names.index(name) for name in PREDICTION_INPUTS]
    try:
        found = [
            Example(
                str(row[0]),
                str(row[1]),
                int(row[2]),
                int(row[3]),
                tuple(float(row[4][column]) for column in columns),
                None if row[5] is None else float(row[5]),
                float(row[6]),
            )
            for row in rows
        ]
    except (TypeError, ValueError, IndexError):
        raise ExampleError(
            "a row is not [user_id, prediction, day, matured, inputs, predicted, label]"
        ) from None
    unknown = {example.prediction for example in found} - set(PREDICTIONS)
    if unknown:
        raise ExampleError(f"unknown predictions {sorted(unknown)}")
    return found


class Deduplicator:
    """Lets each example through once.

    A user's examples come in the order their timers labelled them, a midnight's
    examples together; a batch done again publishes the same ones in the same
    order. So it remembers, per user, the latest day that labelled any, and the
    examples of that day seen.

    >>> seen = Deduplicator()
    >>> day_40 = [Example("u", "purchase_30d", 10, 40, (), None, 1.0),
    ...           Example("u", "churn_90d", -50, 40, (), None, 0.0)]
    >>> [seen.first_time(e) for e in day_40 + day_40]
    [True, True, False, False]
    >>> day_41 = Example("u", "purchase_30d", 11, 41, (), None, 0.0)
    >>> seen.first_time(day_41), seen.first_time(day_40[0])
    (True, False)
    """

    def __init__(self) -> None:
        self._latest: dict[str, tuple[int, set[tuple[str, int]]]] = {}

    def first_time(self, example: Example) -> bool:
        """Whether `example` was not let through before."""
        known = self._latest.get(example.user_id)
        if known is None or example.matured > known[0]:
            self._latest[example.user_id] = (example.matured, {(example.prediction, example.day)})
            return True
        matured, seen = known
        if example.matured < matured or (example.prediction, example.day) in seen:
            return False
        seen.add((example.prediction, example.day))
        return True
