"""Types of segstream's compiled core (processors/core, Rust, bound with PyO3)."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from processors.events import EventKind

FEATURE_NAMES: Final[tuple[str, ...]]
PREDICTIONS: Final[tuple[str, ...]]
"""The predictions a model snapshot may score: `purchase_30d`, `churn_90d`, `revenue_90d`."""
PREDICTION_INPUTS: Final[tuple[str, ...]]
"""What every prediction reads, in coefficient order (docs/predictions.md)."""
PREDICTION_HORIZON_DAYS: Final[tuple[int, ...]]
"""Each prediction's horizon in days, in `PREDICTIONS` order."""
LABEL_EVERY_DAYS: Final[int]
"""Examples are labelled at the UTC midnights of the days since the epoch this divides."""
"""Every numeric feature, in the fixed order of feature vectors."""
TEXT_FEATURES: Final[tuple[str, ...]]
"""Features whose value is a name; `""` when unknown."""
CLOCK_FEATURES: Final[tuple[str, ...]]
"""The features that grow as event time passes (`days_since_…`, `T`, `cart_idle_minutes`)."""
RECENT_SECONDS: Final[int]
"""How far back exact event times are kept for burst conditions, in seconds."""

def murmur2(key: bytes) -> int:
    """Kafka's murmur2 of `key`, sign bit cleared."""

def canonical_partitions(user_ids: list[str], partitions: int) -> list[int]:
    """The canonical partition of each of `user_ids` among `partitions`, in one call."""

class Action:
    """One validated event reduced to what segmentation needs (see :mod:`processors.events`)."""

    user_id: str
    message_id: str
    kind: EventKind
    timestamp: float
    value: float
    categories: tuple[str, ...]
    device: str | None
    anonymous_id: str | None
    previous_id: str | None
    product: str | None
    traits: dict[str, bool | float | str | None]
    """The identify traits kept from the message, by name."""
    def __init__(
        self,
        user_id: str,
        message_id: str,
        kind: int,
        timestamp: float,
        value: float = 0.0,
        categories: Sequence[str] = (),
        device: str | None = None,
        anonymous_id: str | None = None,
        previous_id: str | None = None,
        product: str | None = None,
        traits: Mapping[str, bool | float | str | None] | None = None,
    ) -> None: ...
    def for_user(self, user_id: str) -> Action:
        """The same event, for the user `user_id`."""

class Rejection:
    """Why a raw event was refused: a reason code and a readable detail."""

    reason: str
    detail: str
    def __init__(self, reason: str, detail: str) -> None: ...

def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not a regular expression `matches` can use (Rust's `regex`), or None."""

Keep = tuple[Sequence[str] | bool, Sequence[str] | bool, Sequence[str]]
"""A `processors.events.Projection`: traits, event names and property paths to keep."""

def decode_events(
    messages: list[bytes], max_bytes: int, *, keep: Keep | None = None
) -> list[Action | Rejection]:
    """Validate raw Segment messages and reduce each to an `Action` or a `Rejection`,
    keeping what `keep` names beyond the built-in features."""

class User:
    """One user's state: aggregates, labels, identity links, timer."""

    segments: tuple[str, ...]
    version: int
    cluster: str | None
    model_version: int | None
    as_of: float
    alias_of: str | None
    due: int | None
    pending: list[int]
    """The UTC days (since the epoch) of the examples waiting for their labels."""
    linked: list[str]
    absorbed: list[str]
    events: int
    remembered: int
    def __init__(self) -> None: ...
    @staticmethod
    def from_bytes(data: bytes) -> User:
        """The user in a stored row (any row version)."""
    def with_labels_of(self, other: User | None) -> User:
        """This user with `other`'s labels (segments, version, cluster), or none."""
    def to_bytes(self) -> bytes:
        """The stored row, in the current version."""
    def features(self, as_of: float | None = None) -> dict[str, float | str]:
        """Every feature as of `as_of` (default: the latest evaluation)."""
    def number(self, name: str) -> float:
        """One numeric feature (by name) as of the latest evaluation."""
    def traits(self) -> dict[str, bool | float | str | None]:
        """The identify traits kept, by name."""
    def computed(
        self, classifier: Classifier, as_of: float | None = None
    ) -> dict[str, bool | float | str | None]:
        """The computed traits `classifier`'s rules name, by name, as of `as_of` (default:
        the latest evaluation); times as ISO 8601 text."""
    def predictions(
        self, classifier: Classifier, as_of: float | None = None
    ) -> dict[str, float | None]:
        """The predictions as `classifier`'s model scores them as of `as_of` (default: the
        latest evaluation), by name; `None` while one is gated."""
    def document(self, user_id: str, classifier: Classifier | None = None) -> dict[str, Any]:
        """The user as exported: id, features, traits, computed traits and predictions (as
        `classifier` has them; predictions `None` without one), segments, cluster and
        versions."""
    def open_cart(self) -> tuple[list[CartLine], int | None]:
        """The products in the open cart and when it last changed."""
    def vector(self, user_id: str, classifier: Classifier | None = None) -> FeatureVector:
        """The user's feature vector as of their latest evaluation, with the computed traits
        `classifier`'s rules compare with a percentile."""
    def aggregates(self) -> bytes:
        """The aggregates in their canonical byte form: equal bytes, equal aggregates."""

class CartLine:
    """One product in an open cart."""

    product: str
    category: str
    count: int
    value: float

class SegmentChange:
    """A user entered or left segments, moved cluster, or (a tombstone) was erased."""

    user_id: str
    entered: tuple[str, ...]
    exited: tuple[str, ...]
    segments: tuple[str, ...]
    version: int
    reason: str
    event_time: float
    cluster: str | None
    previous_cluster: str | None
    model_version: int | None
    cart: list[CartLine]
    cart_changed_at: int | None
    is_tombstone: bool
    @staticmethod
    def tombstone(user_id: str, event_time: float) -> SegmentChange:
        """The record after a user's erasure."""

class FeatureVector:
    """A user's numeric features (`FEATURE_NAMES` order) as of event time `as_of`, the
    numeric values of the computed traits the rules compare with a percentile, and the
    prediction inputs (`PREDICTION_INPUTS` order; empty unless users are predicted on)."""

    user_id: str
    as_of: float
    values: tuple[float, ...]
    refresh: bool
    computed: dict[str, float]
    inputs: tuple[float, ...]
    def __init__(
        self,
        user_id: str,
        as_of: float,
        values: Sequence[float],
        refresh: bool = False,
        computed: Mapping[str, float] = ...,
        inputs: Sequence[float] = ...,
    ) -> None: ...

class Relay:
    """A message the pipeline sends itself on the events topic, keyed by `key`."""

    kind: str
    key: str
    body: bytes
    position: int
    def __init__(self, kind: str, key: str, body: bytes = b"", position: int = -1) -> None: ...

class Classifier:
    """Compiled rules with their percentile thresholds, the model's placement and its
    predictions' coefficients."""

    min_delay: float
    def segments_of(self, features: Mapping[str, float | str]) -> tuple[str, ...]:
        """The segments a user with these feature values is in (the others as a new user's)."""
    def __init__(
        self,
        rules: str,
        thresholds: list[tuple[str, float]],
        clustered: list[str],
        model: Mapping[str, Any] | None = None,
        predictions: Mapping[str, Any] | None = None,
        examples: bool = False,
    ) -> None: ...

class PartitionStep:
    """What one partition's items produced."""

    users: dict[str, User]
    changes: list[SegmentChange]
    messages: list[tuple[bytes, bytes | None]]
    """The changes' messages on the change topic, when asked for (`published`)."""
    touched: dict[str, str]
    vectors: list[FeatureVector]
    examples: bytes
    """The labelled examples whose horizon the timers reached, as one message of the examples
    topic (empty when none; read by `processors.examples.unpack_examples`)."""
    example_count: int
    placed: list[str]
    relays: list[Relay]
    expired: list[str]
    erased: list[str]
    timers: dict[str, int | None]
    rows: dict[str, bytes]
    """The state rows of the users whose state differs from what was loaded: the ones to
    write back."""
    relabelled: list[str]
    """The users whose labels differ from what was loaded."""
    fired: int
    new_users: int
    applied: int
    duplicates: int

class Watermark:
    """A partition's event-time progress: events older than `value` (the watermark) are
    late, and timers due by `firing` (the firing clock) fire (see
    `processors/core/src/watermark.rs`)."""

    lateness: float
    delay: float
    max_event_time: float
    floor: float
    firing_floor: float
    value: float
    """Events older than this are late."""
    firing: float
    """Timers due by this fire."""
    def __init__(
        self,
        lateness: float,
        delay: float,
        max_event_time: float = ...,
        floor: float = ...,
        firing_floor: float = ...,
    ) -> None: ...
    def admit(self, moment: float) -> bool:
        """Whether an event at `moment` is on time; on-time events move both clocks."""
    def advance_to(self, moment: float) -> None:
        """Declare that no event before `moment` will come: both clocks stand there at least."""
    def follow_wall_clock(self, now: float) -> None:
        """Let a quiet partition's clocks follow the wall clock `now`."""

class PartitionBatch:
    """One partition's items of a batch, with the firing clock after each."""

    last: int
    """The offset of the partition's last message in the batch."""
    advances: bool
    """Whether an advance-watermark command is among the items (every user is swept)."""
    relayed: int
    """Relayed messages taken."""
    replaying: bool | None
    """Whether the partition's latest event was replayed; `None` when it had no event."""
    def __init__(self, number: int, last: int, opened: float = ...) -> None: ...
    def add(self, item: object, position: int, mark: float) -> None:
        """Append an item from the message at batch `position`; the firing clock is then
        `mark`."""
    def user_ids(self) -> set[str]:
        """The users the items name."""
    def position(self, index: int) -> int:
        """The batch position of the message item `index` came from."""
    def __len__(self) -> int: ...

class ReadBatch:
    """A batch's messages read into each owned partition's items."""

    partitions: dict[int, PartitionBatch]
    rejected: list[tuple[Any, Rejection]]
    misrouted: list[tuple[Any, str, int]]
    errors: list[Any]
    consumed: int
    live_times: list[float]
    """Event times of the taken live (not replayed) events."""
    arrival_delays: list[float]
    """How far each was behind its partition's newest event time as it arrived, in s."""

def read_messages(
    messages: Sequence[Any],
    clocks: Mapping[int, Watermark],
    special: Callable[[Any, PartitionBatch, int], bool | Rejection],
    *,
    partition_count: int,
    max_bytes: int,
    not_after: float,
    keep: Keep | None = None,
) -> ReadBatch:
    """Read a batch's messages in order into the items of the partitions in `clocks`,
    judging tracker events against their watermarks; relays (but routed events) and
    control commands go to `special`, which for a routed event says whether to judge it."""

def score_predictions(
    predictions: Mapping[str, Any], rows: Sequence[Sequence[float]]
) -> list[list[float | None]]:
    """Each row of raw prediction inputs scored as the core scores users, by the
    coefficients `predictions` gives by name (as `Classifier` takes them): per row, a value
    per prediction in `PREDICTIONS` order, `None` for one not given."""

def pack_vectors(vectors: Sequence[FeatureVector]) -> bytes:
    """One message of the `features` topic holding `vectors`: a msgpack map of the column
    names and one `[user_id, as_of, values, refresh]` row per vector."""

def run_partition(
    items: PartitionBatch | Iterable[object],
    stored: Mapping[str, User] | Mapping[str, bytes],
    classifier: Classifier,
    *,
    dedup_before: float,
    partition_users: Sequence[str] = (),
    retention: float = ...,
    marks: Sequence[float] | None = None,
    opened: float = ...,
    due: Sequence[tuple[int, str]] = (),
    firing: float = ...,
    published: tuple[float, str] | None = None,
    resident: Resident | None = None,
) -> PartitionStep:
    """Apply one partition's items in order to its users, firing their timers on the way
    (`marks`: the firing clock after each item; `opened`: before the first). With `stored`
    a dict, the step runs without the GIL, and with `resident` (the partition's) it takes
    each user kept there with exactly their stored row instead of decoding it, and keeps
    the users it stepped. With `published` (processed at, rules version), it also makes
    its changes' messages on the change topic (`PartitionStep.messages`)."""

class Resident:
    """Users a worker keeps decoded between the steps of one partition, each with the row
    it was written as: a step takes a kept user only while their stored row is still that
    row byte for byte (another worker's write, or a commit that failed, means decoding
    afresh), so steps read the same users with it or without it. At most `capacity` are
    kept, the users of the latest steps.
    """

    def __init__(self, capacity: int) -> None: ...
    def set_capacity(self, capacity: int) -> None:
        """Keep at most `capacity` users from now on."""
    def __len__(self) -> int: ...
    def take_counts(self) -> tuple[int, int]:
        """The users steps took as kept, and the rows they decoded because no user was
        kept with them, since the last call."""

def tally_moves(
    changes: Sequence[SegmentChange],
) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """How many times `changes` entered and exited each segment, and entered and left each
    cluster: `(name, "entered" or "exited", count)`, in the order first met."""

def pack_labels(prefix: str, users: Mapping[str, User], rules_version: str) -> tuple[bytes, int]:
    """One `HSET` a user on their labels hash (`prefix` and the user id), packed in the Redis
    protocol, and how many: `segments` (a JSON list), `cluster`, `version`, `model_version`,
    `event_time` (the float's `repr`), `rules_version` and `alias_of`, empty where none."""

def pack_activity(
    keys: Mapping[str, str],
    changes: Sequence[SegmentChange],
    expired: Sequence[str],
    user_changes_kept: int,
    segment_log_length: int,
) -> tuple[bytes, int]:
    """The commands that count and log `changes` and drop the `expired` users' logs, packed
    in the Redis protocol, and how many; `keys` holds `moves` (the moves' hash) and the starts
    of the `segment_log`, `cluster_log` and `user_log` keys."""

def change_messages(
    changes: Sequence[SegmentChange], processed_at: float, rules_version: str
) -> list[tuple[bytes, bytes | None]]:
    """Each change as a message on the change topic: the user's id as its key, and its
    JSON document (none for an erasure's tombstone)."""

def relabel(
    users: Mapping[str, User] | Mapping[str, bytes],
    classifier: Classifier,
    reason: str,
    retention: float,
) -> tuple[dict[str, User], list[SegmentChange], dict[str, int | None], list[str]]:
    """Re-evaluate, re-time and re-place `users` now for `reason`; the users, their changes,
    the timers that moved and the users whose labels moved."""
