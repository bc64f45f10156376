"""Size-over-time charts as inline SVG, drawn on the server: no script, nothing to load.

>>> svg = size_chart([(0.0, 3), (60.0, 5)], "last 24 hours")
>>> svg.startswith("<svg") and "polyline" in svg and "last 24 hours" in svg
True
>>> "no samples yet" in size_chart([], "last 24 hours")
True
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

_WIDTH, _HEIGHT, _PAD = 640, 140, 28


def size_chart(points: Sequence[tuple[float, int]], title: str, *, small: bool = False) -> Markup:
    """A line of sizes (`(epoch s, size)`, oldest first) titled `title`; `small` draws a
    sparkline without axes."""
    width, height = (160, 32) if small else (_WIDTH, _HEIGHT)
    pad = 2 if small else _PAD
    label = escape(title)
    if not points:
        return Markup(
            f'<svg class="chart" role="img" aria-label="{label}" width="{width}" '
            f'height="{height}"><text x="{pad}" y="{height // 2}">no samples yet</text></svg>'
        )
    if len(points) == 1:  # one sample: a level line up to it
        points = [(points[0][0] - 60.0, points[0][1]), points[0]]
    first, last = points[0][0], points[-1][0]
    top = max(size for _, size in points) or 1
    span = (last - first) or 1.0

    def x(at: float) -> float:
        return pad + (width - 2 * pad) * (at - first) / span

    def y(size: int) -> float:
        return height - pad - (height - 2 * pad) * size / top

    line = " ".join(f"{x(at):.1f},{y(size):.1f}" for at, size in points)
    parts = [
        f'<svg class="chart" role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f"<title>{label}</title>",
        f'<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="{line}"/>',
        f'<circle cx="{x(last):.1f}" cy="{y(points[-1][1]):.1f}" r="2.5" fill="#2563eb"/>',
    ]
    if not small:
        parts += [
            f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
            'stroke="#999"/>',
            f'<text x="{pad}" y="{pad - 8}">{label} · max {top:,}</text>',
            f'<text x="{pad}" y="{height - 8}">{_clock(first)}</text>',
            f'<text x="{width - pad}" y="{height - 8}" text-anchor="end">{_clock(last)}</text>',
        ]
    parts.append("</svg>")
    return Markup("".join(parts))


def _clock(at: float) -> str:
    """A sample's time, UTC.

    >>> _clock(90_000.0)
    '1970-01-02 01:00 UTC'
    """
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
