"""Feature vectors and their wire form on the `features` topic.

Workers publish each active user's latest vector about once a second, many
to a message; each message names its columns, so a trainer reads vectors of
any worker version whose features it knows. A vector also carries the values of
the computed traits the rules compare with a percentile, by name. A vector with
no values says that its user is no more (merged into another, expired or
erased). The core packs
them (:func:`pack_vectors`, `processors/core/src/vectors.rs`); this module reads
them back.

>>> values = tuple(range(len(FEATURE_NAMES)))
>>> message = pack_vectors([FeatureVector("u1", 60.0, values, computed={"minutes_30d": 95.0})])
>>> [(v.user_id, v.as_of, v.values[:3], v.computed) for v in unpack_vectors(message)]
[('u1', 60.0, (0.0, 1.0, 2.0), {'minutes_30d': 95.0})]
>>> unpack_vectors(b"nonsense")
Traceback (most recent call last):
...
processors.vectors.VectorError: not a feature-vector message
"""

from __future__ import annotations

from typing import Any

import msgpack

from processors._core import FEATURE_NAMES, FeatureVector, pack_vectors

__all__ = ["VectorError", "pack_vectors", "unpack_vectors"]


class VectorError(ValueError):
    """A features message that cannot be read."""


def unpack_vectors(message: bytes) -> list[FeatureVector]:
    """The vectors in a message, columns put in :data:`FEATURE_NAMES` order."""
    try:
        document: Any = msgpack.unpackb(message)
        names, rows = list(document["features"]), document["rows"]
    except (TypeError, KeyError, ValueError, msgpack.UnpackException):
        raise VectorError("not a feature-vector message") from None
    missing = [name for name in FEATURE_NAMES if name not in names]
    if missing:
        raise VectorError(f"features this trainer needs are missing: {missing[:5]}")
    columns = [names.index(name) for name in FEATURE_NAMES]
    try:
        return [
            FeatureVector(
                str(row[0]),
                float(row[1]),
                tuple(float(row[2][column]) for column in columns) if row[2] else (),
                len(row) > 3 and row[3] is True,
                {str(name): float(value) for name, value in row[4].items()} if len(row) > 4 else {},
                tuple(float(value) for value in row[5]) if len(row) > 5 else (),
            )
            for row in rows
        ]
    except (TypeError, ValueError, IndexError, AttributeError):
        raise VectorError(
            "a row is not [user_id, as_of, values, refresh, computed, inputs]"
        ) from None
