"""Everything segstream keeps for one user, and its compact byte form.

>>> from processors.events import Action, EventKind
>>> user = UserState()
>>> user.profile.apply(Action("u1", "m1", EventKind.PAGE, 100.0))
>>> user.labels.segments = ("Browsers",)
>>> UserState.from_bytes(user.to_bytes()) == user
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from processors.profile import Profile
from processors.segments import UserLabels


@dataclass(slots=True)
class UserState:
    """A user's aggregates and labels; ``as_of`` is the event time they were last evaluated at."""

    profile: Profile = field(default_factory=Profile)
    labels: UserLabels = field(default_factory=UserLabels)
    as_of: float = 0.0

    def to_bytes(self) -> bytes:
        """Compact serialisation (msgpack) for the state store."""
        row = [self.profile.to_row(), list(self.labels.segments), self.labels.version, self.as_of]
        packed: bytes = msgpack.packb(row)
        return packed

    def document(self, user_id: str) -> dict[str, Any]:
        """The user as exported: id, features as of ``as_of``, segments and version."""
        return {
            "user_id": user_id,
            "features": self.profile.features(self.as_of),
            "segments": list(self.labels.segments),
            "version": self.labels.version,
            "as_of": self.as_of,
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        """Inverse of :meth:`to_bytes`."""
        profile, segments, version, as_of = msgpack.unpackb(data)
        return cls(Profile.from_row(profile), UserLabels(tuple(segments), version), as_of)
