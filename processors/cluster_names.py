"""Readable cluster names from what sets each centroid apart.

A centroid lives in scaled space, where 0 is the population mean and 1 one
standard deviation, so its largest coordinates are what distinguishes the
cluster. Each clustering feature has a word for "well above" and one for
"well below" the mean; a name joins the words of the (up to) three strongest
coordinates, strongest first.

>>> features = ("days_since_last_seen", "revenue_30d", "mobile_share_30d")
>>> name_clusters(features, [(-1.2, 1.5, 0.9), (2.0, -0.1, -0.2)])
['high spend · recent · mobile', 'lapsed']
"""

from __future__ import annotations

from collections.abc import Sequence

WORDS: dict[str, tuple[str, str]] = {
    "days_since_last_seen": ("lapsed", "recent"),
    "days_since_first_seen": ("long-time", "new"),
    "orders_lifetime": ("repeat buyer", "non-buyer"),
    "avg_order_value": ("big baskets", "small baskets"),
    "revenue_30d": ("high spend", "low spend"),
    "sessions_7d": ("frequent visits", "rare visits"),
    "product_views_7d": ("heavy browsing", "light browsing"),
    "searches_7d": ("searcher", "few searches"),
    "cart_adds_7d": ("cart builder", "empty carts"),
    "abandoned_carts_7d": ("cart abandoner", "completes carts"),
    "bounce_rate_7d": ("bouncy", "engaged"),
    "mobile_share_30d": ("mobile", "desktop"),
    "top_category_share_30d": ("single-category", "multi-category"),
    "engagement_velocity": ("warming up", "cooling down"),
}
"""Per clustering feature: the word for well above and for well below the mean."""

STRONG = 0.5
"""A coordinate names the cluster when it is at least this many standard deviations out."""


def _words(features: Sequence[str], centroid: Sequence[float]) -> list[str]:
    ranked = sorted(range(len(features)), key=lambda index: -abs(centroid[index]))
    words = []
    for index in ranked:
        value = centroid[index]
        high, low = WORDS.get(
            features[index], (f"high {features[index]}", f"low {features[index]}")
        )
        if abs(value) >= STRONG and (word := high if value > 0 else low) not in words:
            words.append(word)
    return words or ["average"]


def name_clusters(features: Sequence[str], centroids: Sequence[Sequence[float]]) -> list[str]:
    """A distinct readable name per centroid, from its three strongest coordinates.

    When two clusters would share a name, both take further words until they
    differ; clusters still alike are numbered.
    """
    words = [_words(features, centroid) for centroid in centroids]
    lengths = [min(3, len(w)) for w in words]
    for _ in range(len(features)):
        names = [" · ".join(w[:n]) for w, n in zip(words, lengths, strict=True)]
        clashing = {i for i, name in enumerate(names) if names.count(name) > 1}
        growable = [i for i in clashing if lengths[i] < len(words[i])]
        if not growable:
            break
        for i in growable:
            lengths[i] += 1
    names = [" · ".join(w[:n]) for w, n in zip(words, lengths, strict=True)]
    seen: dict[str, int] = {}
    distinct = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        distinct.append(name if names.count(name) == 1 else f"{name} #{seen[name]}")
    return distinct
