"""`segstream evaluate`: measure the clustering model and write a report with plots.

It samples users from Redis (a reservoir over a scan of every user's state),
computes their features as of their latest evaluation, and measures the
latest model snapshot on them with :func:`processors.quality.assess`. The
Markdown report and two PNG plots go to one directory:

- `clusters-pca.png`: the sampled users on their first two principal
  components, coloured by cluster (and, with ground truth, by true group);
- `segment-sizes.png`: each cluster's share over the snapshot history, and the
  rule segments' sizes now;
- with predictions measured, `predictions-calibration.png` (observed against
  predicted by decile) and `predictions-lift.png` (each decile's observed rate
  over the overall rate); the report says which predictions are gated.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import orjson
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from processors._core import PREDICTIONS, User
from processors.model import COLD_START, GATE_LABELS, ModelSnapshot, PredictionQuality
from processors.quality import Assessment, assess
from state.model_store import ModelStore
from state.read_model import ReadModel
from state.redis_store import RedisStateStore


class EvaluationError(RuntimeError):
    """Nothing to evaluate: no model snapshot, or no users."""


@dataclass(slots=True)
class Evaluation:
    """An assessment and what it was made from."""

    assessment: Assessment
    snapshot: ModelSnapshot
    history: list[ModelSnapshot]
    labelled_ari: float | None
    """ARI of the clusters in users' labels (as workers placed them) against the truth."""
    segment_sizes: dict[str, int]


def reservoir(users: Iterator[tuple[str, User]], size: int, seed: int) -> list[tuple[str, User]]:
    """A uniform sample of at most `size` users that are not merged into another."""
    rng = random.Random(seed)
    kept: list[tuple[str, User]] = []
    seen = 0
    for user_id, state in users:
        if state.alias_of is not None:
            continue
        seen += 1
        if len(kept) < size:
            kept.append((user_id, state))
        elif (slot := rng.randrange(seen)) < size:
            kept[slot] = (user_id, state)
    return kept


def read_truth(path: Path) -> dict[str, str]:
    """User id to true group from a JSON Lines file of `{"user_id", "persona"}`."""
    truth = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = orjson.loads(line)
            truth[str(row["user_id"])] = str(row["persona"])
    return truth


def evaluate_model(
    store: RedisStateStore,
    models: ModelStore,
    read_model: ReadModel,
    *,
    sample: int,
    seed: int,
    truth: dict[str, str] | None = None,
) -> Evaluation:
    """Measure the latest snapshot on a sample of the stored users."""
    snapshot = models.latest()
    if snapshot is None:
        raise EvaluationError("no model snapshot yet: is `segstream trainer` running?")
    history = [
        ModelSnapshot.model_validate({**summary, "quantiles": {}}) for summary in models.history()
    ]
    users = reservoir(store.users(), sample, seed)
    if truth is not None:
        users = [(user_id, state) for user_id, state in users if user_id in truth]
    if not users:
        raise EvaluationError("no users to evaluate")
    rows = np.array([state.vector(user_id).values for user_id, state in users])
    groups = [truth[user_id] for user_id, _ in users] if truth is not None else None
    assessment = assess(rows, snapshot, history, groups, seed=seed)
    labelled_ari = None
    if groups is not None:
        pairs = [
            (group, state.cluster)
            for group, (_, state) in zip(groups, users, strict=True)
            if state.cluster not in (None, COLD_START)
        ]
        if pairs:
            labelled_ari = float(adjusted_rand_score(*zip(*pairs, strict=True)))
    return Evaluation(assessment, snapshot, history, labelled_ari, read_model.segment_sizes())


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def write_report(evaluation: Evaluation, directory: Path) -> Path:
    """Write `report.md` and the plots into `directory`; the report's path."""
    directory.mkdir(parents=True, exist_ok=True)
    _plot_pca(evaluation, directory / "clusters-pca.png")
    _plot_sizes(evaluation, directory / "segment-sizes.png")
    if _measured(evaluation.snapshot):
        _plot_predictions(evaluation.snapshot, directory)
    report = directory / "report.md"
    report.write_text(markdown(evaluation), encoding="utf-8")
    return report


def markdown(evaluation: Evaluation) -> str:
    """The report's text."""
    a, snapshot = evaluation.assessment, evaluation.snapshot
    created = datetime.fromtimestamp(snapshot.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        "# segstream model evaluation",
        "",
        f"Model v{snapshot.version} (generation {snapshot.generation}, {snapshot.reason}), "
        f"published {created}; {a.k} clusters. Sample: {a.users} users, "
        f"{a.placed} placed ({a.users - a.placed} in cold-start).",
        "",
        "## Clusters",
        "",
        "| id | name | share of trainer sample | share of this sample |",
        "| --- | --- | ---: | ---: |",
    ]
    counts = {cluster.id: a.labels.count(cluster.id) for cluster in snapshot.clusters}
    for cluster in snapshot.clusters:
        here = counts[cluster.id] / a.placed if a.placed else 0.0
        lines.append(f"| {cluster.id} | {cluster.name} | {cluster.share:.1%} | {here:.1%} |")
    lines += [
        "",
        "## Internal quality",
        "",
        "| measure | value | better when |",
        "| --- | ---: | --- |",
        f"| silhouette | {_fmt(a.silhouette)} | higher (-1 to 1) |",
        f"| Davies-Bouldin | {_fmt(a.davies_bouldin)} | lower |",
        f"| Calinski-Harabasz | {_fmt(a.calinski_harabasz, 1)} | higher |",
        "",
        "## Stability between successive snapshots",
        "",
    ]
    if a.stability:
        values = [ari for _, _, ari in a.stability]
        lines += [
            f"ARI over {len(values)} pairs: mean {np.mean(values):.3f}, "
            f"min {min(values):.3f}, last {values[-1]:.3f}.",
            "",
            "| from | to | ARI |",
            "| ---: | ---: | ---: |",
            *(f"| v{before} | v{after} | {ari:.3f} |" for before, after, ari in a.stability[-10:]),
        ]
    else:
        lines.append("Only one snapshot so far.")
    if a.online_ari is not None:
        lines += [
            "",
            "## Against the ground truth",
            "",
            "| model | ARI | NMI |",
            "| --- | ---: | ---: |",
            f"| online (River, latest snapshot) | {_fmt(a.online_ari)} | {_fmt(a.online_nmi)} |",
            f"| offline (scikit-learn KMeans, k={a.k}) | {_fmt(a.offline_ari)} "
            f"| {_fmt(a.offline_nmi)} |",
            f"| clusters in users' labels | {_fmt(evaluation.labelled_ari)} | |",
            "",
            f"Online ARI is {_fmt(a.ari_ratio, 2)} of the offline ARI.",
        ]
    lines += _prediction_lines(evaluation.snapshot)
    lines += [
        "",
        "## Rule segments now",
        "",
        "| segment | users |",
        "| --- | ---: |",
        *(f"| {name} | {size} |" for name, size in sorted(evaluation.segment_sizes.items())),
        "",
        "![clusters](clusters-pca.png)",
        "",
        "![sizes](segment-sizes.png)",
        "",
    ]
    return "\n".join(lines)


def _measured(snapshot: ModelSnapshot) -> dict[str, PredictionQuality]:
    """The predictions whose quality the snapshot gives, by name."""
    found = {}
    for name, model in snapshot.predictions.items():
        if model.quality is not None and model.quality.calibration:
            found[name] = model.quality
    return found


def _prediction_lines(snapshot: ModelSnapshot) -> list[str]:
    """The report's predictions section: gating, and quality as the predictions are used."""
    lines = [
        "",
        "## Predictions",
        "",
        "Each example is scored with the prediction made at its snapshot, against its label "
        "(the latest 10,000 per prediction; docs/predictions.md).",
        "",
        "| prediction | state | labels positive / negative | AUC | log loss (base rate's) "
        "| mean predicted / observed | calibration error | top-decile lift |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in PREDICTIONS:
        model = snapshot.predictions.get(name)
        if model is None:
            lines.append(f"| {name} | gated: no labelled example yet | 0 / 0 | | | | | |")
            continue
        state = (
            "scored"
            if model.ready
            else (f"gated: needs {GATE_LABELS} positive and {GATE_LABELS} negative labels")
        )
        row = f"| {name} | {state} | {model.positives} / {model.negatives} "
        q = model.quality
        if q is None or not q.examples:
            lines.append(row + "| | | | | |")
            continue
        loss = "" if q.log_loss is None else f"{q.log_loss:.3f} ({_fmt(q.base_log_loss)})"
        lines.append(
            row + f"| {_fmt(q.auc)} | {loss} | {q.mean_predicted:.3f} / {q.mean_observed:.3f} "
            f"| {_fmt(q.calibration_error)} | {_fmt(q.lift, 2)} |"
        )
    if _measured(snapshot):
        lines += [
            "",
            "![calibration](predictions-calibration.png)",
            "",
            "![lift](predictions-lift.png)",
        ]
    return lines


def _plot_predictions(snapshot: ModelSnapshot, directory: Path) -> None:
    """Calibration by decile and the lift of each decile, per prediction."""
    measured = _measured(snapshot)
    figure, axes = plt.subplots(1, len(measured), figsize=(5 * len(measured), 4.5), squeeze=False)
    for axis, (name, quality) in zip(axes[0], measured.items(), strict=True):
        predicted, observed = zip(*quality.calibration, strict=True)
        top = max(max(predicted), max(observed)) or 1.0
        axis.plot([0, top], [0, top], color="grey", linestyle="--", label="perfect")
        axis.plot(predicted, observed, marker="o", label="deciles")
        axis.set_title(f"{name}: calibration")
        axis.set_xlabel("mean prediction")
        axis.set_ylabel("observed")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(directory / "predictions-calibration.png", dpi=110)
    plt.close(figure)
    figure, axes = plt.subplots(1, len(measured), figsize=(5 * len(measured), 4.5), squeeze=False)
    for axis, (name, quality) in zip(axes[0], measured.items(), strict=True):
        base = quality.mean_observed or 1.0
        lifts = [observed / base for _, observed in quality.calibration]
        axis.bar(range(1, len(lifts) + 1), lifts)
        axis.axhline(1.0, color="grey", linestyle="--")
        axis.set_title(f"{name}: lift by decile")
        axis.set_xlabel("decile of the prediction (1 lowest)")
        axis.set_ylabel("observed / overall")
    figure.tight_layout()
    figure.savefig(directory / "predictions-lift.png", dpi=110)
    plt.close(figure)


def _plot_pca(evaluation: Evaluation, path: Path) -> None:
    a = evaluation.assessment
    names = evaluation.snapshot.names()
    panels: list[tuple[str, Sequence[str]]] = [("clusters", [names[c] for c in a.labels])]
    if a.expected is not None:
        panels.append(("ground truth", a.expected))
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 6), squeeze=False)
    if a.scaled is not None and len(a.scaled) >= 2:
        points = PCA(n_components=2, random_state=0).fit_transform(a.scaled)
        for axis, (title, labels) in zip(axes[0], panels, strict=True):
            for label in sorted(set(labels)):
                mask = np.array([value == label for value in labels])
                axis.scatter(points[mask, 0], points[mask, 1], s=6, alpha=0.6, label=label)
            axis.set_title(f"Users by {title} (PCA of scaled features)")
            axis.set_xlabel("PC1")
            axis.set_ylabel("PC2")
            axis.legend(fontsize=7, markerscale=2, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_sizes(evaluation: Evaluation, path: Path) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5))
    history = evaluation.history or [evaluation.snapshot]
    start = history[0].created_at
    names = evaluation.snapshot.names()
    ids = sorted(
        {c.id for snapshot in history for c in snapshot.clusters}, key=lambda i: int(i[1:])
    )
    for identifier in ids:
        times, shares = [], []
        for snapshot in history:
            share = next((c.share for c in snapshot.clusters if c.id == identifier), 0.0)
            times.append((snapshot.created_at - start) / 60)
            shares.append(share)
        left.plot(times, shares, label=f"{identifier} {names.get(identifier, '(gone)')}")
    left.set_title("Cluster shares over snapshots")
    left.set_xlabel("minutes since the first snapshot")
    left.set_ylabel("share of sampled users")
    left.legend(fontsize=7)
    sizes = sorted(evaluation.segment_sizes.items())
    right.barh([name for name, _ in sizes], [size for _, size in sizes])
    right.set_title("Rule segments now")
    right.set_xlabel("users")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
