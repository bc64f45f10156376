"""Everything segstream keeps for one user, and its compact byte form.

>>> from processors.events import Action, EventKind
>>> user = UserState()
>>> action = Action("u1", "m1", EventKind.PAGE, 100.0)
>>> user.first_time(action), user.first_time(action)
(True, False)
>>> _ = user.profile.apply(action)
>>> user.labels.segments = ("Browsers",)
>>> UserState.from_bytes(user.to_bytes()) == user
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from processors.events import Action
from processors.profile import Profile
from processors.segments import UserLabels


def message_digest(message_id: str) -> int:
    """A 64-bit digest of a `messageId`, for remembering it in little space."""
    return int.from_bytes(hashlib.blake2b(message_id.encode(), digest_size=8).digest(), "big")


@dataclass(slots=True)
class UserState:
    """A user's aggregates and labels.

    `as_of` is the event time they were last evaluated at. `recent` maps the
    digests of the user's recent `messageId`s to their event times, so a
    message delivered twice is applied once. `linked` are the other ids this
    user was told to be (by `identify` or `alias`), `absorbed` those whose
    aggregates were added here; `alias_of` is set when this id is another's.
    `due` is the event time of the user's pending timer (see
    :mod:`processors.timers`), kept in step with the partition's timer store.
    """

    profile: Profile = field(default_factory=Profile)
    labels: UserLabels = field(default_factory=UserLabels)
    as_of: float = 0.0
    recent: dict[int, int] = field(default_factory=dict)
    linked: list[str] = field(default_factory=list)
    absorbed: list[str] = field(default_factory=list)
    alias_of: str | None = None
    due: int | None = None

    def first_time(self, action: Action) -> bool:
        """Remember `action`'s `messageId`; False when it was seen before."""
        digest = message_digest(action.message_id)
        if digest in self.recent:
            return False
        self.recent[digest] = int(action.timestamp)
        return True

    def forget_before(self, moment: float) -> None:
        """Forget message ids of events before `moment` (a duplicate of them would be late)."""
        if self.recent and min(self.recent.values()) < moment:
            self.recent = {digest: when for digest, when in self.recent.items() if when >= moment}

    def document(self, user_id: str) -> dict[str, Any]:
        """The user as exported: id, features as of `as_of`, segments and version."""
        return {
            "user_id": user_id,
            "features": self.profile.features(self.as_of),
            "segments": list(self.labels.segments),
            "cluster": self.labels.cluster,
            "model_version": self.labels.model_version,
            "version": self.labels.version,
            "as_of": self.as_of,
        }

    def to_bytes(self) -> bytes:
        """Compact serialisation (msgpack) for the state store."""
        row = [
            self.profile.to_row(),
            list(self.labels.segments),
            self.labels.version,
            self.as_of,
            sorted(self.recent.items()),
            self.linked,
            self.absorbed,
            self.alias_of,
            self.labels.cluster,
            self.labels.model_version,
            self.due,
        ]
        packed: bytes = msgpack.packb(row)
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> UserState:
        """Inverse of :meth:`to_bytes`."""
        row = msgpack.unpackb(data)
        profile, segments, version, as_of, recent, linked, absorbed, alias_of = row[:8]
        cluster, model_version = row[8:10] if len(row) >= 10 else (None, None)
        due = row[10] if len(row) >= 11 else None
        return cls(
            Profile.from_row(profile),
            UserLabels(tuple(segments), version, cluster, model_version),
            as_of,
            {digest: when for digest, when in recent},
            linked,
            absorbed,
            alias_of,
            due,
        )
