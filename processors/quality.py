"""How good a clustering model is, measured on a sample of users' current features.

- Internal quality of the latest snapshot's clusters: silhouette (higher is
  better, -1..1), Davies-Bouldin (lower is better), Calinski-Harabasz
  (higher is better), in the snapshot's scaled space.
- Stability: the adjusted Rand index (ARI) between the clusterings successive
  snapshots give the same users (1 means nobody moved).
- Against ground truth, where known (the simulator's personas): ARI and
  normalised mutual information (NMI) of the online model, and of an offline
  scikit-learn `KMeans` with the same k fitted on the same scaled features.

Users still in `cold-start` are left out: neither model places them.

>>> import numpy as np
>>> from processors.model import Cluster, ModelSnapshot, FEATURE_INDEX, FEATURE_NAMES
>>> snapshot = ModelSnapshot(version=1, generation=1, reason="initial", created_at=0.0,
...     features=("mobile_share_30d",), mean=(0.5,), std=(0.5,), min_events=0, quantiles={},
...     clusters=(Cluster(id="c1", name="desktop", centroid=(-1.0,), share=0.5),
...               Cluster(id="c2", name="mobile", centroid=(1.0,), share=0.5)))
>>> rows = np.zeros((40, len(FEATURE_NAMES)))
>>> rows[:20, FEATURE_INDEX["mobile_share_30d"]] = np.linspace(0.9, 1.0, 20)
>>> truth = ["app"] * 20 + ["web"] * 20
>>> report = assess(rows, snapshot, [snapshot], truth)
>>> report.online_ari, report.offline_ari, report.stability
(1.0, 1.0, [])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import (
    adjusted_rand_score,
    calinski_harabasz_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
    silhouette_score,
)

from processors.model import COLD_START, ClusterAssigner, Matrix, ModelSnapshot


@dataclass(slots=True)
class Assessment:
    """The measures; `None` where they cannot be computed (too few users or clusters)."""

    users: int
    placed: int
    k: int
    silhouette: float | None = None
    davies_bouldin: float | None = None
    calinski_harabasz: float | None = None
    stability: list[tuple[int, int, float]] = field(default_factory=list)
    """`(version, next version, ARI)` for successive snapshots."""
    online_ari: float | None = None
    online_nmi: float | None = None
    offline_ari: float | None = None
    offline_nmi: float | None = None
    labels: list[str] = field(default_factory=list)
    """The latest snapshot's cluster of each placed user."""
    expected: list[str] | None = None
    """The true group of each placed user, when known."""
    scaled: Matrix | None = None
    """The placed users' scaled features, for plots."""

    @property
    def ari_ratio(self) -> float | None:
        """Online ARI over offline ARI against the ground truth."""
        if self.online_ari is None or not self.offline_ari:
            return None
        return self.online_ari / self.offline_ari


def assess(
    rows: Matrix,
    snapshot: ModelSnapshot,
    history: Sequence[ModelSnapshot],
    truth: Sequence[str] | None = None,
    *,
    seed: int = 7,
) -> Assessment:
    """Measure `snapshot` on users' feature `rows` (:data:`FEATURE_NAMES` order).

    `history` are earlier snapshots, oldest first, for stability; `truth`, when
    given, is each row's true group.
    """
    assigner = ClusterAssigner(snapshot)
    clusters = assigner.assign(rows)
    warm = np.array([cluster != COLD_START for cluster in clusters], dtype=bool)
    labels = [cluster for cluster in clusters if cluster != COLD_START]
    scaled = assigner.scale(rows[warm]) if warm.any() else np.zeros((0, len(snapshot.features)))
    report = Assessment(
        users=len(rows), placed=len(labels), k=len(snapshot.clusters), labels=labels, scaled=scaled
    )
    distinct = len(set(labels))
    if 1 < distinct < len(labels):
        report.silhouette = float(
            silhouette_score(scaled, labels, sample_size=min(len(labels), 5_000), random_state=seed)
        )
        report.davies_bouldin = float(davies_bouldin_score(scaled, labels))
        report.calinski_harabasz = float(calinski_harabasz_score(scaled, labels))
    warm_rows = rows[warm]
    for before, after in itertools.pairwise(history):
        ari = adjusted_rand_score(
            ClusterAssigner(before).assign(warm_rows), ClusterAssigner(after).assign(warm_rows)
        )
        report.stability.append((before.version, after.version, float(ari)))
    if truth is not None and len(labels) > report.k:
        expected = [group for group, is_warm in zip(truth, warm.tolist(), strict=True) if is_warm]
        report.expected = expected
        offline = KMeans(n_clusters=report.k, n_init=10, random_state=seed).fit_predict(scaled)
        report.online_ari = float(adjusted_rand_score(expected, labels))
        report.online_nmi = float(normalized_mutual_info_score(expected, labels))
        report.offline_ari = float(adjusted_rand_score(expected, offline))
        report.offline_nmi = float(normalized_mutual_info_score(expected, offline))
    return report
