"""Server-rendered SVG plots: no chart library, no CDN, readable without JavaScript.

Every mark carries a ``<title>``, which browsers show on hover (the interaction these
plots need: reading exact values); colours come from one sequential and one diverging
scale so heatmaps compare across models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _sequential(t: float) -> str:
    """0 -> light, 1 -> dark blue (viridis-like enough for similarity)."""
    t = min(1.0, max(0.0, t))
    stops = [(247, 251, 255), (107, 174, 214), (8, 48, 107)]
    low, high = (stops[0], stops[1]) if t < 0.5 else (stops[1], stops[2])
    f = t * 2 if t < 0.5 else (t - 0.5) * 2
    r, g, b = (round(a + (c - a) * f) for a, c in zip(low, high, strict=True))
    return f"rgb({r},{g},{b})"


def _diverging(t: float) -> str:
    """-1 -> red, 0 -> white, 1 -> blue: signed values such as differences."""
    t = min(1.0, max(-1.0, t))
    end = (178, 24, 43) if t < 0 else (33, 102, 172)
    r, g, b = (round(255 + (c - 255) * abs(t)) for c in end)
    return f"rgb({r},{g},{b})"


def heatmap(
    matrix: Sequence[Sequence[float]],
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    low: float | None = None,
    high: float | None = None,
    cell: int = 0,
    show_labels: bool = True,
    signed: bool = False,
    notes: Sequence[Sequence[str]] | None = None,
) -> SafeString:
    """A matrix as coloured cells; each cell's title gives its row, column and value (and
    its note, where ``notes`` gives one). ``signed``: a diverging scale centred on 0, for
    differences; otherwise a sequential one from ``low`` to ``high``."""
    n_rows, n_cols = len(matrix), len(matrix[0]) if matrix else 0
    values = [v for row in matrix for v in row if v is not None and math.isfinite(v)]
    if signed:
        high = max((abs(v) for v in values), default=1.0) or 1.0
        low = -high
    low = min(values) if low is None and values else (low or 0.0)
    high = max(values) if high is None and values else (high or 1.0)
    span = (high - low) or 1.0
    cell = cell or max(2, min(28, 480 // max(n_rows, n_cols, 1)))
    margin_left = 140 if show_labels else 10
    margin_top = 40 if not show_labels else 110
    width = max(margin_left + n_cols * cell + 10, 7 * len(title) + 20)
    height = margin_top + n_rows * cell + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot heatmap" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" {FONT}>',
        f"<title>{escape(title)}</title>",
        f'<text x="10" y="14" font-weight="600">{escape(title)}</text>',
    ]
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value is None or not math.isfinite(value):
                colour = "#eee"
            elif signed:
                colour = _diverging(value / high)
            else:
                colour = _sequential((value - low) / span)
            note = f" ({notes[i][j]})" if notes and notes[i][j] else ""
            parts.append(
                f'<rect x="{margin_left + j * cell}" y="{margin_top + i * cell}" width="{cell}" '
                f'height="{cell}" fill="{colour}"><title>{escape(row_labels[i])} x '
                f"{escape(col_labels[j])}: {_fmt(value)}{escape(note)}</title></rect>"
            )
    if show_labels:
        for i, label in enumerate(row_labels):
            parts.append(
                f'<text x="{margin_left - 4}" y="{margin_top + i * cell + cell * 0.7}" '
                f'text-anchor="end">{escape(label[:22])}</text>'
            )
        for j, label in enumerate(col_labels):
            x, y = margin_left + j * cell + cell * 0.7, margin_top - 4
            parts.append(
                f'<text x="{x}" y="{y}" transform="rotate(-60 {x} {y})">{escape(label[:18])}</text>'
            )
    scale = (
        f"colour scale {_fmt(low, 2)} (red) through 0 (white) to {_fmt(high, 2)} (blue)"
        if signed
        else f"colour scale {_fmt(low, 2)} (light) to {_fmt(high, 2)} (dark)"
    )
    parts.append(f'<text x="10" y="28" fill="#555">{scale}</text></svg>')
    return mark_safe("".join(parts))


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    low: float | None = None  # CI band (line charts)
    high: float | None = None


def _scale(lo: float, hi: float, out_lo: float, out_hi: float) -> Callable[[float], float]:
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def scatter(
    points: Sequence[Point], *, title: str, x_label: str, y_label: str, width: int = 420
) -> SafeString:
    height = 320
    left, right, top, bottom = 50, 10, 26, 40
    xs, ys = [p.x for p in points], [p.y for p in points]
    x = _scale(min(xs, default=0), max(xs, default=1), left, width - right)
    y = _scale(min(ys, default=0), max(ys, default=1), height - bottom, top)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot scatter" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" {FONT}>',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>',
        _axes(left, right, top, bottom, width, height, xs, ys, x_label, y_label),
    ]
    for p in points:
        parts.append(
            f'<circle cx="{x(p.x):.1f}" cy="{y(p.y):.1f}" r="2.5" fill="#2563eb" '
            f'fill-opacity="0.55"><title>{escape(p.label)}: {_fmt(p.x)}, {_fmt(p.y)}</title>'
            "</circle>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def line_chart(
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 560,
) -> SafeString:
    """One line per series with its CI band; x is a position (e.g. layer depth)."""
    height = 300
    left, right, top, bottom = 50, 140, 26, 40
    everything = [p for points in series.values() for p in points]
    xs = [p.x for p in everything]
    ys = [v for p in everything for v in (p.y, p.low, p.high) if v is not None]
    x = _scale(min(xs, default=0), max(xs, default=1), left, width - right)
    y = _scale(min(ys, default=0), max(ys, default=1), height - bottom, top)
    palette = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot lines" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" {FONT}>',
        f"<title>{escape(title)}</title>",
        f'<text x="{left}" y="14" font-weight="600">{escape(title)}</text>',
        _axes(left, right, top, bottom, width, height, xs, ys, x_label, y_label),
    ]
    for index, (name, points) in enumerate(series.items()):
        colour = palette[index % len(palette)]
        ordered = sorted(points, key=lambda p: p.x)
        band = [(p.x, p.low, p.high) for p in ordered if p.low is not None and p.high is not None]
        if len(band) > 1:
            outline = [f"{x(px):.1f},{y(high):.1f}" for px, _, high in band]
            outline += [f"{x(px):.1f},{y(low):.1f}" for px, low, _ in reversed(band)]
            parts.append(
                f'<polygon points="{" ".join(outline)}" fill="{colour}" fill-opacity="0.12"/>'
            )
        path = " ".join(f"{x(p.x):.1f},{y(p.y):.1f}" for p in ordered)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for p in ordered:
            ci = f" [{_fmt(p.low)}, {_fmt(p.high)}]" if p.low is not None else ""
            parts.append(
                f'<circle cx="{x(p.x):.1f}" cy="{y(p.y):.1f}" r="3.5" fill="{colour}">'
                f"<title>{escape(name)} · {escape(p.label)}: {_fmt(p.y)}{ci}</title></circle>"
            )
        parts.append(
            f'<text x="{width - right + 8}" y="{top + 14 * (index + 1)}" fill="{colour}">'
            f"{escape(name[:22])}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _axes(
    left: int,
    right: int,
    top: int,
    bottom: int,
    width: int,
    height: int,
    xs: Sequence[float],
    ys: Sequence[float],
    x_label: str,
    y_label: str,
) -> str:
    x0, x1 = min(xs, default=0), max(xs, default=1)
    y0, y1 = min(ys, default=0), max(ys, default=1)
    base = height - bottom
    return (
        f'<line x1="{left}" y1="{base}" x2="{width - right}" y2="{base}" stroke="#999"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#999"/>'
        f'<text x="{left}" y="{base + 14}">{_fmt(x0, 2)}</text>'
        f'<text x="{width - right}" y="{base + 14}" text-anchor="end">{_fmt(x1, 2)}</text>'
        f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text x="{left - 4}" y="{base}" text-anchor="end">{_fmt(y0, 2)}</text>'
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{_fmt(y1, 2)}</text>'
        f'<text x="12" y="{(top + base) / 2}" transform="rotate(-90 12 {(top + base) / 2})" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
