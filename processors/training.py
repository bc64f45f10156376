"""Online clustering of users: River scaler + incremental k-means, snapshots with stable ids.

:class:`OnlineClusterer` is the trainer's model, free of I/O. Feed it the
feature vectors workers publish (:meth:`~OnlineClusterer.learn`); ask it for a
:class:`~processors.model.ModelSnapshot` every so often
(:meth:`~OnlineClusterer.snapshot`).

- Every vector updates a uniform sample of *users* (bottom-k by id hash, so
  each user counts once however active) that gives population percentiles
  (of the features, and of the computed traits the rules compare with one,
  which vectors carry), cluster shares, and the data k is chosen on.
- Vectors of users with at least `min_events` events also update a River
  `StandardScaler` over the log1p-transformed clustering features, and a River
  `KMeans` on the scaled values. The distance of each vector to its centroid
  feeds an ADWIN drift detector.
- (Re)clustering starts the scaler afresh from the sample, picks k in
  `[k_min, k_max]` by silhouette on the sample, merges clusters under
  `min_share` of the sampled users into their neighbours, and matches the
  new centroids to the previous snapshot's (Hungarian assignment), so a
  cluster keeps its id while it stays put.
- The first snapshot clusters once the sample holds `min_samples` warm users;
  a detected drift re-clusters at the next snapshot (reason `drift`), and so
  does the first snapshot `recluster_seconds` after the last clustering
  (reason `recluster`); other snapshots refine centroids only (reason `update`).

>>> import random
>>> rng = random.Random(1)
>>> config = TrainerConfig(k_min=2, k_max=4, min_samples=200, min_events=1, seed=1)
>>> model = OnlineClusterer(config)
>>> for n in range(600):
...     row = [0.0] * len(FEATURE_NAMES)
...     row[FEATURE_INDEX["events_lifetime"]] = 10
...     row[FEATURE_INDEX["mobile_share_30d"]] = rng.choice([0.05, 0.95]) + rng.gauss(0, 0.02)
...     model.learn(f"u{n}", row)
>>> snapshot = model.snapshot(now=0.0)
>>> snapshot.version, snapshot.reason, len(snapshot.clusters)
(1, 'initial', 2)
>>> sorted(c.name for c in snapshot.clusters)
['desktop', 'mobile']
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from river import cluster, drift, preprocessing
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans as BatchKMeans
from sklearn.metrics import silhouette_score

from processors._core import FEATURE_NAMES, FeatureVector
from processors.cluster_names import name_clusters
from processors.model import (
    CLUSTER_FEATURES,
    FEATURE_INDEX,
    LOG_FEATURES,
    PERCENTILE_POINTS,
    Cluster,
    Matrix,
    ModelSnapshot,
    transform,
)
from processors.rules import COMPUTED_PREFIX


@dataclass(frozen=True, slots=True)
class TrainerConfig:
    """How the trainer learns.

    `k_min`/`k_max` bound the number of clusters; `min_share` (0-1) is the
    smallest share of sampled users a cluster may keep; `sample_size` users
    are sampled; `min_samples` warm users are needed before the first
    clustering; `min_events` is the history a user needs to be clustered;
    `halflife` (0-1) is how far k-means moves a centroid towards each vector;
    `drift_delta` is ADWIN's confidence; `drift_warmup` vectors are learned
    after a (re)clustering before drift is watched; `match_distance` (scaled
    units) is how far a centroid may move and keep its id; `recluster_seconds`
    is how long a clustering stands before the next (0: only on drift).
    """

    k_min: int = 2
    k_max: int = 10
    min_share: float = 0.01
    sample_size: int = 5_000
    min_samples: int = 500
    min_events: int = 5
    halflife: float = 0.01
    drift_delta: float = 0.002
    drift_warmup: int = 2_000
    match_distance: float = 1.5
    recluster_seconds: float = 0.0
    seed: int = 7

    def __post_init__(self) -> None:
        if not 1 <= self.k_min <= self.k_max:
            raise ValueError("need 1 <= k_min <= k_max")
        if not 0 <= self.min_share < 1:
            raise ValueError("min_share is a fraction in [0, 1)")
        if self.min_samples < self.k_max or self.sample_size < self.min_samples:
            raise ValueError("need k_max <= min_samples <= sample_size")


def _user_hash(user_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big")


class UserSample:
    """A uniform sample of at most `size` distinct users with their latest feature vector.

    A user is in the sample when their id hash is among the `size` smallest
    seen (a bottom-k sketch): no memory of the users left out is needed, and
    a busy user counts as much as a quiet one.

    >>> sample = UserSample(2)
    >>> for user in ["a", "b", "c", "a"]:
    ...     sample.offer(user, [1.0])
    >>> len(sample)
    2
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.rows: dict[str, list[float]] = {}
        self.computed: dict[str, dict[str, float]] = {}
        """The sampled users' computed traits' values (those the rules compare with a
        percentile), by user: only users who have any."""
        self.inputs: dict[str, tuple[float, ...]] = {}
        """The sampled users' prediction inputs, by user: only when users are predicted on."""
        self._largest: list[tuple[int, str]] = []  # max-heap of (-hash, user)

    def __len__(self) -> int:
        return len(self.rows)

    def offer(
        self,
        user_id: str,
        row: Sequence[float],
        computed: Mapping[str, float] | None = None,
        inputs: Sequence[float] = (),
    ) -> None:
        """Record `user_id`'s latest vector (and computed values and prediction inputs) if
        the user belongs in the sample."""
        if user_id not in self.rows:
            digest = _user_hash(user_id)
            if len(self.rows) < self.size:
                heapq.heappush(self._largest, (-digest, user_id))
            elif digest < -self._largest[0][0]:
                _, evicted = heapq.heappushpop(self._largest, (-digest, user_id))
                del self.rows[evicted]
                self.computed.pop(evicted, None)
                self.inputs.pop(evicted, None)
            else:
                return
        self.rows[user_id] = list(row)
        if computed:
            self.computed[user_id] = dict(computed)
        else:
            self.computed.pop(user_id, None)
        if inputs:
            self.inputs[user_id] = tuple(inputs)
        else:
            self.inputs.pop(user_id, None)

    def forget(self, user_id: str) -> None:
        """Leave `user_id` out from now on (until they offer a vector again).

        >>> sample = UserSample(2)
        >>> sample.offer("a", [1.0]); sample.forget("a"); len(sample)
        0
        """
        if self.rows.pop(user_id, None) is not None:
            self.computed.pop(user_id, None)
            self.inputs.pop(user_id, None)
            self._largest = [(key, user) for key, user in self._largest if user != user_id]
            heapq.heapify(self._largest)

    def computed_values(self) -> dict[str, list[float]]:
        """Per computed trait, the values of the sampled users who have one."""
        found: dict[str, list[float]] = collections.defaultdict(list)
        for values in self.computed.values():
            for name, value in values.items():
                found[name].append(value)
        return dict(found)

    def matrix(self) -> Matrix:
        """The sampled vectors, one row per user, in user id order: the same sample
        clusters the same however its vectors arrived."""
        if not self.rows:
            return np.zeros((0, len(FEATURE_NAMES)))
        return np.array([self.rows[user_id] for user_id in sorted(self.rows)], dtype=np.float64)


class OnlineClusterer:
    """The trainer's model; see the module docstring."""

    def __init__(self, config: TrainerConfig) -> None:
        self.config = config
        self.features = CLUSTER_FEATURES
        self.log_features = LOG_FEATURES
        self.sample = UserSample(config.sample_size)
        self.scaler = preprocessing.StandardScaler()
        self.kmeans: cluster.KMeans | None = None
        self.ids: list[str] = []
        self.detector = drift.ADWIN(delta=config.drift_delta)
        self.version = 0
        self.generation = 0
        self.learned = 0
        self.drifts = 0
        self.drift_pending = False
        self.previous: ModelSnapshot | None = None
        self._next_id = 1
        self._since_clustering = 0
        self._clustered_at = -math.inf
        self._events = FEATURE_INDEX["events_lifetime"]
        self._columns = [FEATURE_INDEX[name] for name in self.features]
        self._logged = {FEATURE_INDEX[name] for name in self.log_features}

    def learn(
        self,
        user_id: str,
        row: Sequence[float],
        *,
        refresh: bool = False,
        computed: Mapping[str, float] | None = None,
        inputs: Sequence[float] = (),
    ) -> None:
        """Learn from one user's feature vector (:data:`FEATURE_NAMES` order) and the
        values of the computed traits the rules compare with a percentile; an empty
        vector takes the user out of the sample.

        A `refresh` (the user did nothing; time moved on) only updates the
        user's row in the sample: k-means and the scaler learn from behaviour,
        weighted by how much of it there is.
        """
        if not row:  # the user is no more: merged into another, expired or erased
            self.sample.forget(user_id)
            return
        self.sample.offer(user_id, row, computed, inputs)
        if refresh or row[self._events] < self.config.min_events:
            return
        x = {
            name: math.log1p(max(row[column], 0.0)) if column in self._logged else row[column]
            for name, column in zip(self.features, self._columns, strict=True)
        }
        self.scaler.learn_one(x)
        self.learned += 1
        if self.kmeans is None:
            return
        scaled = self.scaler.transform_one(x)
        closest = self.kmeans.learn_predict_one(scaled)
        center = self.kmeans.centers[closest]
        distance = math.sqrt(sum((center[name] - value) ** 2 for name, value in scaled.items()))
        self._watch(distance)

    def learn_many(self, vectors: Iterable[FeatureVector]) -> None:
        """:meth:`learn` each vector."""
        for vector in vectors:
            self.learn(
                vector.user_id,
                vector.values,
                refresh=vector.refresh,
                computed=vector.computed,
                inputs=vector.inputs,
            )

    def _watch(self, distance: float) -> None:
        self._since_clustering += 1
        if self._since_clustering < self.config.drift_warmup:
            return
        before = self.detector.estimation
        self.detector.update(distance)
        if self.detector.drift_detected and self.detector.estimation > before:
            self.drifts += 1
            self.drift_pending = True

    def snapshot(self, now: float) -> ModelSnapshot | None:
        """The next snapshot, or `None` while there are too few warm users to cluster."""
        warm = self._warm_sample()
        if self.kmeans is None:
            if len(warm) < self.config.min_samples:
                return None
            return self._recluster(warm, "initial", now)
        if self.drift_pending:
            return self._recluster(warm, "drift", now)
        every = self.config.recluster_seconds
        if every and now - self._clustered_at >= every and len(warm) >= self.config.min_samples:
            return self._recluster(warm, "recluster", now)
        return self._refresh(warm, now)

    def recluster(self, now: float) -> ModelSnapshot | None:
        """Choose k and cluster afresh on the sample now (reason `recluster`)."""
        warm = self._warm_sample()
        if len(warm) < self.config.min_samples:
            return None
        return self._recluster(warm, "recluster" if self.kmeans else "initial", now)

    def restore(
        self, snapshot: ModelSnapshot, sample: Sequence[tuple[str, Sequence[float]]]
    ) -> None:
        """Resume from a published snapshot and the sample saved with it."""
        if snapshot.features != self.features:
            self.features = snapshot.features
            self._columns = [FEATURE_INDEX[name] for name in self.features]
        self.log_features = snapshot.log_features
        self._logged = {FEATURE_INDEX[name] for name in self.log_features}
        count = max(snapshot.learned, 1)
        self.scaler = preprocessing.StandardScaler._from_state(
            counts=dict.fromkeys(self.features, count),
            means=dict(zip(self.features, snapshot.mean, strict=True)),
            vars={name: std**2 for name, std in zip(self.features, snapshot.std, strict=True)},
        )
        self._set_centers(np.array([c.centroid for c in snapshot.clusters]))
        self.ids = [c.id for c in snapshot.clusters]
        self._next_id = 1 + max(int(c.id[1:]) for c in snapshot.clusters)
        self.version, self.generation = snapshot.version, snapshot.generation
        self._clustered_at = snapshot.created_at
        self.learned = snapshot.learned
        self.previous = snapshot
        for user_id, row in sample:
            self.sample.offer(user_id, row)

    def _warm_sample(self) -> Matrix:
        rows = self.sample.matrix()
        return rows[rows[:, self._events] >= self.config.min_events]

    def _scaling(self) -> tuple[Matrix, Matrix]:
        mean = np.array([self.scaler.means[name] for name in self.features])
        std = np.sqrt(np.array([self.scaler.vars[name] for name in self.features]))
        return mean, np.where(std > 0, std, 1.0)

    def _scaled(self, rows: Matrix) -> Matrix:
        mean, std = self._scaling()
        return (transform(rows, self.features, self.log_features) - mean) / std

    def _recluster(self, warm: Matrix, reason: str, now: float) -> ModelSnapshot:
        self._rebase_scaler(warm)
        scaled = self._scaled(warm)
        chosen = self._best_centroids(scaled)
        centroids = self._merge_small(scaled, chosen)
        if len(centroids) < len(chosen):  # as good a fit at the smaller k as a fresh one
            fresh = BatchKMeans(n_clusters=len(centroids), n_init=10, random_state=self.config.seed)
            fresh.fit(scaled)
            if fresh.inertia_ < _inertia(scaled, centroids):
                centroids = self._merge_small(scaled, fresh.cluster_centers_)
        self.ids = self._match(centroids)
        self._set_centers(centroids)
        self.generation += 1
        self.detector = drift.ADWIN(delta=self.config.drift_delta)
        self._since_clustering = 0
        self._clustered_at = now
        self.drift_pending = False
        return self._publish(warm, scaled, reason, now)

    def _rebase_scaler(self, warm: Matrix) -> None:
        """Start the scaler afresh from the sampled users, as clustering starts from them.

        The running scaler weighs users by how often they send vectors and
        remembers the population as it was; the sample counts each user once, now.
        """
        values = transform(warm, self.features, self.log_features)
        count = max(self.learned, 1)
        self.scaler = preprocessing.StandardScaler._from_state(
            counts=dict.fromkeys(self.features, count),
            means=dict(zip(self.features, values.mean(axis=0).tolist(), strict=True)),
            vars=dict(zip(self.features, values.var(axis=0).tolist(), strict=True)),
        )

    def _refresh(self, warm: Matrix, now: float) -> ModelSnapshot:
        scaled = self._scaled(warm)
        centroids = _lloyd_step(scaled, self._centers())
        self._set_centers(centroids)
        merged = self._merge_small(scaled, centroids, refit=False)
        if len(merged) == len(centroids):
            return self._publish(warm, scaled, "update", now)
        kept = [i for i, c in enumerate(centroids) if any((c == m).all() for m in merged)]
        self.ids = [self.ids[i] for i in kept]
        self._set_centers(merged)
        self.generation += 1  # a cluster is gone: its users must be placed again
        return self._publish(warm, scaled, "recluster", now)

    def _best_centroids(self, scaled: Matrix) -> Matrix:
        config = self.config
        best: tuple[float, Matrix] | None = None
        for k in range(config.k_min, min(config.k_max, len(scaled) - 1) + 1):
            fitted = BatchKMeans(n_clusters=k, n_init=10, random_state=config.seed).fit(scaled)
            if k == 1 or len(set(fitted.labels_.tolist())) < 2:
                score = -1.0
            else:
                score = float(
                    silhouette_score(
                        scaled,
                        fitted.labels_,
                        sample_size=min(len(scaled), 2_000),
                        random_state=config.seed,
                    )
                )
            if best is None or score > best[0]:
                best = (score, fitted.cluster_centers_)
        assert best is not None
        return np.asarray(best[1], dtype=np.float64)

    def _merge_small(self, scaled: Matrix, centroids: Matrix, refit: bool = True) -> Matrix:
        """Drop the smallest cluster while it holds under `min_share` of the users; with
        `refit`, k-means converges again from the centroids left after each drop."""
        while len(centroids) > 1:
            labels = _nearest(scaled, centroids)
            counts = np.bincount(labels, minlength=len(centroids))
            smallest = int(counts.argmin())
            if counts[smallest] >= self.config.min_share * len(scaled):
                break
            centroids = np.delete(centroids, smallest, axis=0)
            if refit:  # k-means run to convergence from the centroids left
                fitted = BatchKMeans(n_clusters=len(centroids), init=centroids, n_init=1)
                centroids = np.asarray(fitted.fit(scaled).cluster_centers_, dtype=np.float64)
        return centroids

    def _match(self, centroids: Matrix) -> list[str]:
        """Stable ids: the previous snapshot's id for each centroid close to one of its own."""
        ids: list[str | None] = [None] * len(centroids)
        previous = self.previous
        if previous is not None:
            old = np.array([c.centroid for c in previous.clusters])
            mean, std = self._scaling()
            old = (old * np.array(previous.std) + np.array(previous.mean) - mean) / std
            distances = np.sqrt(((centroids[:, None, :] - old[None, :, :]) ** 2).sum(axis=2))
            rows, cols = linear_sum_assignment(distances)
            for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
                if distances[row, col] <= self.config.match_distance:
                    ids[row] = previous.clusters[col].id
        fresh = []
        for identifier in ids:
            if identifier is None:
                identifier = f"c{self._next_id}"
                self._next_id += 1
            fresh.append(identifier)
        return fresh

    def _centers(self) -> Matrix:
        assert self.kmeans is not None
        centers = self.kmeans.centers
        return np.array([[centers[i][name] for name in self.features] for i in sorted(centers)])

    def _set_centers(self, centroids: Matrix) -> None:
        kmeans = cluster.KMeans(
            n_clusters=len(centroids), halflife=self.config.halflife, seed=self.config.seed
        )
        kmeans.centers = {
            i: collections.defaultdict(float, zip(self.features, row.tolist(), strict=True))
            for i, row in enumerate(centroids)
        }
        self.kmeans = kmeans

    def _publish(self, warm: Matrix, scaled: Matrix, reason: str, now: float) -> ModelSnapshot:
        centroids = self._centers()
        labels = _nearest(scaled, centroids) if len(scaled) else np.zeros(0, dtype=np.intp)
        counts = np.bincount(labels, minlength=len(centroids))
        spread = ((scaled - centroids[labels]) ** 2).sum(axis=1) if len(scaled) else np.zeros(1)
        mean, std = self._scaling()
        names = name_clusters(self.features, centroids.tolist())
        self.version += 1
        snapshot = ModelSnapshot(
            version=self.version,
            generation=self.generation,
            reason=reason,  # type: ignore[arg-type]
            created_at=now,
            features=self.features,
            log_features=self.log_features,
            mean=tuple(mean.tolist()),
            std=tuple(std.tolist()),
            clusters=tuple(
                Cluster(
                    id=identifier,
                    name=name,
                    centroid=tuple(centroid),
                    size=int(count),
                    share=float(count) / max(len(warm), 1),
                )
                for identifier, name, centroid, count in zip(
                    self.ids, names, centroids.tolist(), counts.tolist(), strict=True
                )
            ),
            min_events=self.config.min_events,
            quantiles=self._quantiles(),
            sample_users=len(self.sample),
            learned=self.learned,
            inertia=float(spread.mean()),
        )
        self.previous = snapshot
        return snapshot

    def _quantiles(self) -> dict[str, tuple[float, ...]]:
        """Percentiles of every feature over the sampled users, and of every computed trait
        the workers send (as `computed.NAME`) over the sampled users who have a number
        for it."""
        rows = self.sample.matrix()
        if not len(rows):
            return {}
        points = np.linspace(0, 100, PERCENTILE_POINTS)
        grid = np.maximum.accumulate(np.percentile(rows, points, axis=0), axis=0)
        found = {name: tuple(grid[:, index].tolist()) for index, name in enumerate(FEATURE_NAMES)}
        for name, values in self.sample.computed_values().items():
            line = np.maximum.accumulate(np.percentile(np.array(values), points))
            found[COMPUTED_PREFIX + name] = tuple(line.tolist())
        return found


def _lloyd_step(scaled: Matrix, centroids: Matrix) -> Matrix:
    """Each centroid moved to the mean of the sampled users nearest to it (kept if none are).

    The sample holds every user's latest vector, so this follows the population as
    it is now, idle users included, which per-event learning alone does not see.
    """
    if not len(scaled):
        return centroids
    labels = _nearest(scaled, centroids)
    moved = centroids.copy()
    for index in range(len(centroids)):
        members = scaled[labels == index]
        if len(members):
            moved[index] = members.mean(axis=0)
    return moved


def _inertia(scaled: Matrix, centroids: Matrix) -> float:
    """The sum of squared distances of the rows to their nearest centroid."""
    distances = ((scaled[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    return float(distances.min(axis=1).sum())


def _nearest(scaled: Matrix, centroids: Matrix) -> NDArray[np.intp]:
    distances = ((scaled[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
    nearest: NDArray[np.intp] = distances.argmin(axis=1)
    return nearest
