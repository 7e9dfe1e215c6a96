"""Server-rendered SVG plots: no chart library, no CDN, readable without JavaScript.

Every mark carries a ``<title>``, which browsers show on hover (the interaction these
plots need: reading exact values). The SVG is static and self-contained (presentation
attributes only, no style attributes, no script: the page's CSP allows neither inline), so
the same text is the page's figure, the SVG download and, rendered by resvg, the PNG one
(``evaluation.figures``).

Readable by default: matrices name their rows and columns where few enough (else on hover),
carry a colour bar with its limits, and choose the colour scale for the data's range
(``heatmap``'s ``scale``); line charts put categories (layers) on the x-axis in the order
given, draw CI bands under the points, reference lines (a ceiling) dashed, and size their
legend from its text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from html import escape

import numpy as np
from django.utils.safestring import SafeString, mark_safe

FONT_SIZE = 11
FONT = f'font-family="DejaVu Sans, system-ui, sans-serif" font-size="{FONT_SIZE}"'
LABELS_MAX = 60  # a matrix with more rows or columns names them on hover only
LABEL_CHARS = 28  # longer axis labels are cut (the full name is in their title)
ROBUST_MIN_VALUES = 200  # fewer values: the data's own range (percentiles would clip them)
ROBUST_PERCENTILES = (2.0, 98.0)
CROWDED = 0.1  # IQR under this fraction of the robust span: values crowd, rank-scale them
PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"]
MISSING = "#e5e7eb"
ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"
SIN_45 = math.sqrt(0.5)  # rotated x-axis names: how far a name reaches down and left

# Characters XML 1.0 forbids (a name holding one would make the SVG invalid, and resvg refuse
# it): C0 controls other than tab, newline and carriage return, and the two non-characters.
XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML forbids (the SVG and the PNG renderer take it)."""
    return XML_FORBIDDEN.sub("", text)


def _text(value: object) -> str:
    """Any text going into the SVG (a title, a label, a note): escaped, with the characters
    XML forbids left out."""
    return escape(xml_safe(str(value)))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _significant(value: float) -> str:
    """Three significant digits: colour-bar limits of crowded values (0.0007) stay readable."""
    return "-" if not math.isfinite(value) else f"{value:.3g}"


def text_width(text: str, size: float = FONT_SIZE) -> float:
    """Roughly how wide ``text`` is drawn (DejaVu Sans averages about 0.6 em a character;
    a little generous, so that legends and labels are never cut)."""
    return len(text) * size * 0.62


def _cut(label: str, chars: int = LABEL_CHARS) -> str:
    return label if len(label) <= chars else label[: chars - 1] + "\N{HORIZONTAL ELLIPSIS}"


def _cut_middle(label: str, chars: int) -> str:
    """``label`` in at most ``chars`` characters, shortened in the middle: a layer's end
    says what it is, so its last dotted parts are kept whole
    (encoder.layer.11.attention.output.dense -> …layer.11.attention.output.dense), and as
    much of its start as still fits (where that is a word or more)."""
    if len(label) <= chars:
        return label
    room = chars - 1  # the ellipsis takes one
    parts = label.split(".")
    tail = ""
    for k in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[k:])
        if len(candidate) > room:
            break
        tail = candidate
    if not tail:  # no whole part fits: keep a third of the start and the rest of the end
        third = room // 3
        return label[:third] + ELLIPSIS + label[len(label) - (room - third) :]
    start = label[: room - len(tail)] if room - len(tail) >= 4 else ""
    return start + ELLIPSIS + tail


def _svg_open(kind: str, width: float, height: float, title: str) -> list[str]:
    width, height = math.ceil(width), math.ceil(height)
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot {kind}" role="img" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" {FONT}>',
        f"<title>{_text(title)}</title>",
        f'<text x="10" y="16" font-weight="bold" font-size="12">{_text(title)}</text>',
    ]


# --- Colours ---------------------------------------------------------------------------------
VIRIDIS = [
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37),
]  # fmt: skip


def _sequential(t: float) -> str:
    """0 -> dark purple, 1 -> yellow (viridis: perceptually even, readable in grey)."""
    t = min(1.0, max(0.0, t)) * (len(VIRIDIS) - 1)
    k = min(int(t), len(VIRIDIS) - 2)
    f = t - k
    r, g, b = (round(a + (c - a) * f) for a, c in zip(VIRIDIS[k], VIRIDIS[k + 1], strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"  # hex: a large matrix has one per cell


def _diverging(t: float) -> str:
    """-1 -> red, 0 -> white, 1 -> blue: signed values such as differences."""
    t = min(1.0, max(-1.0, t))
    end = (178, 24, 43) if t < 0 else (33, 102, 172)
    r, g, b = (round(255 + (c - 255) * abs(t)) for c in end)
    return f"#{r:02x}{g:02x}{b:02x}"  # hex: a large matrix has one per cell


@dataclass(frozen=True)
class ColourScale:
    """How values become colours: ``unit`` maps a value to 0..1 (sequential) or -1..1
    (signed); ``ticks`` are (position on the bar 0..1, value) pairs; ``how`` says in words
    which scale it is, for the colour bar's label."""

    unit: Callable[[float], float]
    colour: Callable[[float], str]
    ticks: list[tuple[float, float]]
    how: str
    signed: bool
    low: float
    high: float


def colour_scale(
    values: Sequence[float | None],
    *,
    signed: bool = False,
    low: float | None = None,
    high: float | None = None,
    scale: str = "auto",
) -> ColourScale:
    """The colour scale for ``values``. ``scale``: "fixed" (``low``..``high``, e.g. 0..1 for
    CKA), "range" (the data's min..max), "robust" (2nd..98th percentile, values beyond take
    the end colour), "rank" (a value's colour is its percentile rank: for values crowded in
    a narrow band) or "auto": fixed where limits are given, the data's range for fewer than
    ``ROBUST_MIN_VALUES`` values, rank where the middle half spans under ``CROWDED`` of the
    robust range, robust otherwise. Signed scales are symmetric about 0."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if data.size == 0:
        data = np.array([0.0, 1.0])
    magnitude = np.abs(data) if signed else data
    if scale == "auto":
        scale = _auto_scale(magnitude, fixed=low is not None or high is not None)
    if scale == "rank":
        return _rank_scale(data, signed=signed)
    if scale == "fixed":
        lo = float(low if low is not None else (magnitude.min() if not signed else 0.0))
        hi = float(high if high is not None else magnitude.max())
        how = _fixed_how(low, high, signed=signed)
    elif scale == "robust":
        lo, hi = (float(p) for p in np.percentile(magnitude, ROBUST_PERCENTILES))
        how = (
            "robust limits: ± the 98th percentile of |value|, values beyond take the end colour"
            if signed
            else "robust limits: 2nd to 98th percentile, values beyond take the end colour"
        )
    else:
        lo, hi = float(magnitude.min()), float(magnitude.max())
        how = "± the largest |value|" if signed else "the data's range"
    if signed:
        hi = max(abs(lo), abs(hi)) or 1.0
        lo = -hi
        return ColourScale(
            unit=lambda v: v / hi,
            colour=_diverging,
            ticks=[(0.0, lo), (0.5, 0.0), (1.0, hi)],
            how=how + ", centred on 0",
            signed=True,
            low=lo,
            high=hi,
        )
    span = (hi - lo) or 1.0
    return ColourScale(
        unit=lambda v: (v - lo) / span,
        colour=_sequential,
        ticks=[(0.0, lo), (0.5, (lo + hi) / 2), (1.0, hi)],
        how=how,
        signed=False,
        low=lo,
        high=hi,
    )


def _fixed_how(low: float | None, high: float | None, *, signed: bool) -> str:
    """The colour bar's words for a fixed scale: only the limits given are fixed."""
    if low is not None and high is not None:
        return "fixed limits"
    if low is None and high is None:
        return "± the largest |value|" if signed else "the data's range"
    if signed:
        return (
            "fixed limits: ± the upper limit"
            if high is not None
            else "± the larger of |lower limit| and the largest |value|"
        )
    if high is not None:
        return "upper limit fixed, lower limit: the data's minimum"
    return "lower limit fixed, upper limit: the data's maximum"


def _auto_scale(magnitude: np.ndarray, *, fixed: bool) -> str:
    if fixed:
        return "fixed"
    if magnitude.size < ROBUST_MIN_VALUES:
        return "range"
    p2, p25, p75, p98 = np.percentile(magnitude, [*ROBUST_PERCENTILES[:1], 25, 75, 98])
    if p98 > p2 and (p75 - p25) < CROWDED * (p98 - p2):
        return "rank"
    return "robust"


def _rank_scale(data: np.ndarray, *, signed: bool) -> ColourScale:
    """Colour by percentile rank (of |v| for signed values, keeping the sign)."""
    ordered = np.sort(np.abs(data) if signed else data)
    n = len(ordered)

    def rank(v: float) -> float:
        if signed and v == 0:
            return 0.0  # no difference is white, however many values are 0
        key = abs(v) if signed else v
        fraction = float(np.searchsorted(ordered, key, side="right")) / n
        return math.copysign(fraction, v) if signed else fraction

    quantiles = [0.0, 0.25, 0.5, 0.75, 1.0]
    values = [float(np.quantile(ordered, q)) for q in quantiles]
    if signed:  # 0 in the middle, the median and the largest |value| either side
        ticks = [(0.0, -values[4]), (0.25, -values[2]), (0.5, 0.0), (0.75, values[2])]
        ticks.append((1.0, values[4]))
        how = (
            "rank-scaled: colour is the percentile of |value|, signed; ticks show 0, the "
            "median and the largest |value|"
        )
    else:
        ticks = list(zip(quantiles, values, strict=True))
        how = (
            "rank-scaled: colour is the value's percentile, ticks show the values at 0, 25, "
            "50, 75 and 100%"
        )
    return ColourScale(
        unit=rank,
        colour=_diverging if signed else _sequential,
        ticks=ticks,
        how=how,
        signed=signed,
        low=-values[-1] if signed else values[0],
        high=values[-1],
    )


def _colour_bar(
    scale: ColourScale, *, x: float, y: float, width: float, label: str, missing: bool
) -> tuple[str, float]:
    """A horizontal colour bar with its ticks and what it shows; returns the markup and its
    height. Drawn as a path (not a rect): a matrix's rects are its cells."""
    # One fixed id per ramp (its stops are always the same): a page holding several bars,
    # some swapped in later by htmx, then never has two gradients of one id that differ.
    gradient = f"colour-bar-{'diverging' if scale.signed else 'viridis'}"
    stops = "".join(
        f'<stop offset="{k / 20:.2f}" stop-color="'
        f'{scale.colour((k / 10 - 1) if scale.signed else k / 20)}"/>'
        for k in range(21)
    )
    parts = [
        f'<g class="colour-bar"><defs><linearGradient id="{gradient}" x1="0" x2="1" y1="0" '
        f'y2="0">{stops}</linearGradient></defs>',
        f'<path d="M{x:.1f},{y:.1f}h{width:.1f}v10h{-width:.1f}z" fill="url(#{gradient})" '
        f'stroke="#666" stroke-width="0.5"/>',
    ]
    for position, value in scale.ticks:
        tx = x + position * width
        # The end labels align with the bar's ends: centred, they would leave the figure.
        anchor = "start" if position <= 0 else "end" if position >= 1 else "middle"
        parts.append(
            f'<path d="M{tx:.1f},{y + 10:.1f}v4" stroke="#666"/>'
            f'<text x="{tx:.1f}" y="{y + 25:.1f}" text-anchor="{anchor}">{_significant(value)}</text>'
        )
    parts.append(f'<text x="{x:.1f}" y="{y + 40:.1f}">{_text(label)}</text>')
    parts.append(f'<text x="{x:.1f}" y="{y + 54:.1f}" fill="#555">{_text(scale.how)}</text>')
    height = 58.0
    if missing:
        parts.append(
            f'<path d="M{x:.1f},{y + 62:.1f}h10v10h-10z" fill="{MISSING}"/>'
            f'<text x="{x + 14:.1f}" y="{y + 71:.1f}" fill="#555">no value</text>'
        )
        height += 16
    parts.append("</g>")
    return "".join(parts), height


# --- Heatmaps ---------------------------------------------------------------------------------
def heatmap(
    matrix: Sequence[Sequence[float | None]],
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    low: float | None = None,
    high: float | None = None,
    cell: int = 0,
    show_labels: bool | None = None,
    signed: bool = False,
    notes: Sequence[Sequence[str]] | None = None,
    scale: str = "auto",
    value_label: str = "value",
) -> SafeString:
    """A matrix as coloured cells with a colour bar; each cell's title gives its row, column
    and value (and its note, where ``notes`` gives one).

    ``signed``: a diverging scale centred on 0, for differences; otherwise a sequential
    one. ``scale`` and ``low``/``high``: see ``colour_scale``. ``show_labels``: name rows and
    columns on the axes (None: where there are at most ``LABELS_MAX`` of each; the cells'
    titles always name them). ``value_label`` says what the colour means ("cosine
    similarity"), under the colour bar."""
    n_rows, n_cols = len(matrix), len(matrix[0]) if matrix else 0
    flat = [v for row in matrix for v in row]
    colours = colour_scale(flat, signed=signed, low=low, high=high, scale=scale)
    labelled = max(n_rows, n_cols) <= LABELS_MAX if show_labels is None else show_labels
    if labelled:
        cell = cell or max(10, min(28, 480 // max(n_rows, n_cols, 1)))
    else:
        cell = cell or max(2, min(28, 480 // max(n_rows, n_cols, 1)))
    size = min(FONT_SIZE, cell - 1)
    row_width = max((text_width(_cut(s), size) for s in row_labels), default=0)
    col_height = max((text_width(_cut(s), size) for s in col_labels), default=0) * 0.87
    left = 10 + (row_width + 6 if labelled else 0)
    top = 28 + (col_height + 8 if labelled else 0)
    grid_width, grid_height = n_cols * cell, n_rows * cell
    bar_width = max(160.0, min(grid_width, 320.0))
    bar_label = f"{value_label} (colour)"
    colours_text = max(text_width(bar_label), text_width(colours.how))
    # Column labels lean right (rotated -60 degrees): the last one reaches past the grid.
    col_reach = col_height / 0.87 * 0.5 if labelled else 0
    width = max(
        left + grid_width + 10 + col_reach,
        text_width(title, 12) + 20,
        left + colours_text + 10,
        left + bar_width + 20,
    )
    missing = any(v is None or not math.isfinite(v) for v in flat)
    bar, bar_height = _colour_bar(
        colours, x=left, y=top + grid_height + 14, width=bar_width, label=bar_label, missing=missing
    )
    height = top + grid_height + 14 + bar_height + 8
    parts = _svg_open("heatmap zoomable", width, height, title)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            if value is None or not math.isfinite(value):
                colour = MISSING
            else:
                colour = colours.colour(colours.unit(value))
            note = f" ({notes[i][j]})" if notes and notes[i][j] else ""
            parts.append(
                f'<rect x="{left + j * cell}" y="{top + i * cell:.0f}" width="{cell}" '
                f'height="{cell}" fill="{colour}"><title>{_text(row_labels[i])} x '
                f"{_text(col_labels[j])}: {_fmt(value)}{_text(note)}</title></rect>"
            )
    if labelled:
        parts.append(_matrix_labels(row_labels, col_labels, left, top, cell, size))
    parts.append(bar)
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _matrix_labels(
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    left: float,
    top: float,
    cell: int,
    size: float,
) -> str:
    parts = [f'<g class="axis-labels" font-size="{size:g}">']
    for i, label in enumerate(row_labels):
        parts.append(
            f'<text x="{left - 4:.1f}" y="{top + i * cell + cell * 0.5 + size * 0.35:.1f}" '
            f'text-anchor="end"><title>{_text(label)}</title>{_text(_cut(label))}</text>'
        )
    for j, label in enumerate(col_labels):
        x, y = left + j * cell + cell * 0.5 + size * 0.35, top - 4
        parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" transform="rotate(-60 {x:.1f} {y:.1f})">'
            f"<title>{_text(label)}</title>{_text(_cut(label))}</text>"
        )
    parts.append("</g>")
    return "".join(parts)


# --- Points and lines -------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    low: float | None = None  # CI band (line charts)
    high: float | None = None


@dataclass(frozen=True)
class Reference:
    """A horizontal line across a chart: a ceiling, a target value (dashed)."""

    y: float
    label: str
    colour: str = "#111827"


def _scale(lo: float, hi: float, out_lo: float, out_hi: float) -> Callable[[float], float]:
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering lo..hi (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    value = start
    while value < hi + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _tick_text(value: float, ticks: Sequence[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    digits = max(0, -math.floor(math.log10(step))) if step > 0 else 2
    return f"{value:.{digits}f}"


def _y_axis(
    ticks: Sequence[float], y: Callable[[float], float], left: float, right_edge: float
) -> str:
    parts = []
    for value in ticks:
        py = y(value)
        parts.append(
            f'<path d="M{left:.1f},{py:.1f}H{right_edge:.1f}" stroke="#e5e7eb"/>'
            f'<text x="{left - 5:.1f}" y="{py + 4:.1f}" text-anchor="end">'
            f"{_tick_text(value, ticks)}</text>"
        )
    return "".join(parts)


def _axis_titles(
    x_label: str,
    y_label: str,
    left: float,
    right_edge: float,
    top: float,
    base: float,
    height: float,
) -> str:
    middle = (top + base) / 2
    return (
        f'<path d="M{left:.1f},{base:.1f}H{right_edge:.1f}M{left:.1f},{top:.1f}V{base:.1f}" '
        f'stroke="#6b7280"/>'
        f'<text x="{(left + right_edge) / 2:.1f}" y="{height - 8:.1f}" text-anchor="middle" '
        f'class="axis-title">{_text(x_label)}</text>'
        f'<text x="14" y="{middle:.1f}" transform="rotate(-90 14 {middle:.1f})" '
        f'text-anchor="middle" class="axis-title">{_text(y_label)}</text>'
    )


def scatter(
    points: Sequence[Point],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 420,
    references: Sequence[Reference] = (),
) -> SafeString:
    """Points with their labels on hover; round ticks on both axes. Points without a finite
    x and y are left out (as ``colour_scale`` leaves out such values)."""
    points = [p for p in points if _finite(p.x) and _finite(p.y)]
    references = [r for r in references if _finite(r.y)]
    height = 340
    left, right, top, bottom = 58, 14, 30, 46
    xs, ys = [p.x for p in points], [p.y for p in points] + [r.y for r in references]
    x_ticks = nice_ticks(min(xs, default=0), max(xs, default=1))
    y_ticks = nice_ticks(min(ys, default=0), max(ys, default=1))
    x = _scale(x_ticks[0], x_ticks[-1], left, width - right)
    y = _scale(y_ticks[0], y_ticks[-1], height - bottom, top)
    base = height - bottom
    parts = _svg_open("scatter zoomable", width, height, title)
    parts.append(_y_axis(y_ticks, y, left, width - right))
    for value in x_ticks:
        parts.append(
            f'<text x="{x(value):.1f}" y="{base + 15:.1f}" text-anchor="middle">'
            f"{_tick_text(value, x_ticks)}</text>"
        )
    parts.append(_axis_titles(x_label, y_label, left, width - right, top, base, height))
    parts += [_reference(r, y, left, width - right) for r in references]
    for p in points:
        parts.append(
            f'<circle cx="{x(p.x):.1f}" cy="{y(p.y):.1f}" r="2.5" fill="#2563eb" '
            f'fill-opacity="0.55"><title>{_text(p.label)}: {_fmt(p.x)}, {_fmt(p.y)}</title>'
            "</circle>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _finite_points(points: Sequence[Point]) -> list[Point]:
    """The points with a finite x and y; a band end that is not finite is dropped (None)."""
    return [
        replace(
            p,
            low=p.low if _finite(p.low) else None,
            high=p.high if _finite(p.high) else None,
        )
        for p in points
        if _finite(p.x) and _finite(p.y)
    ]


def _reference(reference: Reference, y: Callable[[float], float], left: float, right: float) -> str:
    py = y(reference.y)
    return (
        f'<path d="M{left:.1f},{py:.1f}H{right:.1f}" stroke="{reference.colour}" '
        f'stroke-width="1.5" stroke-dasharray="6 4" class="reference">'
        f"<title>{_text(reference.label)}: {_fmt(reference.y)}</title></path>"
    )


def line_chart(
    series: Mapping[str, Sequence[Point]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 0,
    x_categories: Sequence[str] | None = None,
    references: Sequence[Reference] = (),
    band_label: str = "shaded: 95% CI",
) -> SafeString:
    """One line per series with its band (``low``..``high``), bands drawn first and
    semi-transparent so that no band covers a point; dashed ``references`` (a ceiling).

    ``x_categories``: names for x = 0, 1, 2, ... (layers in depth order), written under the
    axis; otherwise x is numeric with round ticks. The legend sits right of the plot, as
    wide as its longest entry. Points without a finite value are left out, and a band's
    non-finite end too (as ``colour_scale`` leaves out such values)."""
    series = {name: _finite_points(points) for name, points in series.items()}
    references = [r for r in references if _finite(r.y)]
    everything = [p for points in series.values() for p in points]
    xs = [p.x for p in everything]
    ys = [v for p in everything for v in (p.y, p.low, p.high) if v is not None]
    ys += [r.y for r in references]
    legend = [(name, PALETTE[k % len(PALETTE)], "line") for k, name in enumerate(series)]
    legend += [(f"{r.label} ({_fmt(r.y)})", r.colour, "dashed") for r in references]
    if any(p.low is not None and p.high is not None for p in everything):
        legend.append((band_label, "#9ca3af", "band"))
    legend_width = 34 + max(text_width(name) for name, _, _ in legend)
    plot_width = max(360, width - legend_width - 70) if width else 420
    if x_categories is not None:  # room for each name (rotated, one line high) under the axis
        plot_width = max(plot_width, 16 * len(x_categories))
    left, top = 62, 30
    if x_categories is not None:
        tick_names = [_cut_middle(name, 32) for name in x_categories]
        bottom = 40 + max((text_width(n) for n in tick_names), default=0) * SIN_45
        left = max(left, math.ceil(_room_left_of(tick_names, plot_width)))
        x_ticks = [float(k) for k in range(len(x_categories))]
        x_lo, x_hi = -0.5, len(x_categories) - 0.5
    else:
        tick_names = []
        bottom = 48
        x_ticks = nice_ticks(min(xs, default=0), max(xs, default=1))
        x_lo, x_hi = x_ticks[0], x_ticks[-1]
    plot_height = 240
    height = max(top + plot_height + bottom, top + 18 * len(legend) + 12)
    total_width = left + plot_width + 16 + legend_width
    right_edge = left + plot_width
    base = top + plot_height
    y_ticks = nice_ticks(min(ys, default=0), max(ys, default=1))
    x = _scale(x_lo, x_hi, left, right_edge)
    y = _scale(y_ticks[0], y_ticks[-1], base, top)
    parts = _svg_open("lines", total_width, height, title)
    parts.append(_y_axis(y_ticks, y, left, right_edge))
    parts.append(_x_ticks(x_ticks, tick_names, x_categories, x, base))
    parts.append(_axis_titles(x_label, y_label, left, right_edge, top, base, height))
    ordered = {name: sorted(points, key=lambda p: p.x) for name, points in series.items()}
    for index, points in enumerate(ordered.values()):  # every band first: none covers a point
        parts.append(_band(points, PALETTE[index % len(PALETTE)], x, y))
    parts += [_reference(r, y, left, right_edge) for r in references]
    for index, points in enumerate(ordered.values()):
        colour = PALETTE[index % len(PALETTE)]
        path = " ".join(f"{x(p.x):.1f},{y(p.y):.1f}" for p in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for index, (name, points) in enumerate(ordered.items()):
        colour = PALETTE[index % len(PALETTE)]
        for p in points:
            ci = f" [{_fmt(p.low)}, {_fmt(p.high)}]" if p.low is not None else ""
            parts.append(
                f'<circle cx="{x(p.x):.1f}" cy="{y(p.y):.1f}" r="3.5" fill="{colour}" '
                f'stroke="#ffffff" stroke-width="1"><title>{_text(name)} · {_text(p.label)}: '
                f"{_fmt(p.y)}{ci}</title></circle>"
            )
    parts.append(_legend(legend, right_edge + 16, top))
    parts.append("</svg>")
    return mark_safe("".join(parts))


def _room_left_of(names: Sequence[str], plot_width: float) -> float:
    """The left margin that holds the rotated category names (-45 degrees, ending at their
    tick): each reaches ``width * sin 45`` left of its tick, the k-th tick lying
    ``(k + 0.5)`` slots right of the axis."""
    slot = plot_width / max(1, len(names))
    reach = max(
        (text_width(name) * SIN_45 - (k + 0.5) * slot + 3 for k, name in enumerate(names)),
        default=0.0,
    )
    return reach + 8


def _x_ticks(
    ticks: Sequence[float],
    names: Sequence[str],
    categories: Sequence[str] | None,
    x: Callable[[float], float],
    base: float,
) -> str:
    parts = ['<g class="x-ticks">']
    for k, value in enumerate(ticks):
        px = x(value)
        parts.append(f'<path d="M{px:.1f},{base:.1f}v4" stroke="#6b7280"/>')
        if categories is not None:
            ty = base + 12
            parts.append(
                f'<text x="{px + 3:.1f}" y="{ty:.1f}" text-anchor="end" '
                f'transform="rotate(-45 {px + 3:.1f} {ty:.1f})"><title>{_text(categories[k])}'
                f"</title>{_text(names[k])}</text>"
            )
        else:
            parts.append(
                f'<text x="{px:.1f}" y="{base + 15:.1f}" text-anchor="middle">'
                f"{_tick_text(value, ticks)}</text>"
            )
    parts.append("</g>")
    return "".join(parts)


def _band(points: Sequence[Point], colour: str, x: Callable, y: Callable) -> str:
    band = [(p.x, p.low, p.high) for p in points if p.low is not None and p.high is not None]
    if len(band) < 2:
        return "".join(
            f'<path d="M{x(px):.1f},{y(low):.1f}V{y(high):.1f}" stroke="{colour}" '
            f'stroke-opacity="0.35" stroke-width="6"/>'
            for px, low, high in band
        )
    outline = [f"{x(px):.1f},{y(high):.1f}" for px, _, high in band]
    outline += [f"{x(px):.1f},{y(low):.1f}" for px, low, _ in reversed(band)]
    return f'<polygon points="{" ".join(outline)}" fill="{colour}" fill-opacity="0.15"/>'


def _legend(entries: Sequence[tuple[str, str, str]], x: float, top: float) -> str:
    parts = ['<g class="legend">']
    for k, (name, colour, mark) in enumerate(entries):
        y = top + 8 + 18 * k
        if mark == "band":
            parts.append(
                f'<path d="M{x:.1f},{y - 5:.1f}h24v10h-24z" fill="{colour}" fill-opacity="0.35"/>'
            )
        else:
            dash = ' stroke-dasharray="6 4"' if mark == "dashed" else ""
            parts.append(
                f'<path d="M{x:.1f},{y:.1f}h24" stroke="{colour}" stroke-width="2"{dash}/>'
            )
        parts.append(f'<text x="{x + 30:.1f}" y="{y + 4:.1f}">{_text(name)}</text>')
    parts.append("</g>")
    return "".join(parts)
