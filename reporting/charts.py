"""Small server-rendered SVG charts for the admin statistics page (no JavaScript, no CDN).

Kept, hand-drawn, because staff read these charts and the serving image has no plotting
library (matplotlib is for training only) and no way to fetch a JavaScript one (it runs offline).
"""

import math
from collections.abc import Sequence

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

_COLORS = ["#417690", "#e6a23c", "#79aec8", "#ba2121"]


def _nice_max(value: float) -> float:
    """The smallest round number (1, 2, 2.5 or 5 times a power of ten) at or above ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value * (1 - 1e-9):
            return step * magnitude
    return 10 * magnitude


def _fit(label: str, *, chars: int) -> str:
    """``label`` shortened with an ellipsis to about ``chars`` characters (10 px font)."""
    chars = max(chars, 4)
    return label if len(label) <= chars else label[: chars - 1] + "\u2026"


def _n(value: float) -> str:
    return f"{value:.1f}"


def _format(value: float) -> str:
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.3g}"


def bar_chart(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    series: Sequence[str] = ("",),
    values: Sequence[Sequence[float]] | None = None,
    width: int = 640,
    height: int = 220,
    unit: str = "",
    label_every: int = 1,
) -> SafeString:
    """Vertical bars, one group per item; ``values`` gives several series per item."""
    rows = values if values is not None else [[value] for _, value in items]
    labels = [label for label, _ in items]
    left, right, top, bottom = 56, 8, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = _nice_max(max((v for row in rows for v in row), default=0))
    group_w = plot_w / max(len(labels), 1)
    bar_w = max(group_w * 0.8 / max(len(series), 1), 1)
    parts = [
        format_html(
            '<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {} {}" '
            'width="{}" height="{}" class="chart" aria-label="{}">',
            width,
            height,
            width,
            height,
            title,
        ),
        format_html("<title>{}</title>", title),
        format_html('<text x="{}" y="14" font-size="12" font-weight="bold">{}</text>', left, title),
    ]
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        parts.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#ccc"/>'
                '<text x="{}" y="{}" font-size="10" text-anchor="end">{}{}</text>',
                left,
                left + plot_w,
                _n(y),
                _n(y),
                left - 4,
                _n(y + 3),
                _format(peak * fraction),
                unit,
            )
        )
    for i, (label, row) in enumerate(zip(labels, rows, strict=True)):
        x0 = left + i * group_w + group_w * 0.1
        for s, value in enumerate(row):
            bar_h = plot_h * (value or 0) / peak
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="{}" height="{}" fill="{}">'
                    "<title>{}{}: {}{}</title></rect>",
                    _n(x0 + s * bar_w),
                    _n(top + plot_h - bar_h),
                    _n(bar_w),
                    _n(bar_h),
                    _COLORS[s % len(_COLORS)],
                    label,
                    f" ({series[s]})" if series[s] else "",
                    _format(value or 0),
                    unit,
                )
            )
        if i % label_every == 0:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>',
                    _n(left + (i + 0.5) * group_w),
                    top + plot_h + 14,
                    _fit(label, chars=int(group_w * label_every / 6)),
                )
            )
    if len(series) > 1:
        for s, name in enumerate(series):
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="10" height="10" fill="{}"/>'
                    '<text x="{}" y="{}" font-size="10">{}</text>',
                    left + s * 110,
                    height - 12,
                    _COLORS[s % len(_COLORS)],
                    left + s * 110 + 14,
                    height - 3,
                    name,
                )
            )
    parts.append(mark_safe("</svg>"))
    return mark_safe("".join(str(part) for part in parts))  # noqa: S308 (parts are escaped)


def ratio_bar(*, title: str, fraction: float | None, width: int = 640) -> SafeString:
    """A horizontal 0-100 % bar (e.g. the cache hit rate)."""
    shown = 0.0 if fraction is None else max(0.0, min(1.0, fraction))
    text = "no answers yet" if fraction is None else f"{shown:.1%}"
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {} 48" width="{}" '
        'height="48" class="chart" aria-label="{}: {}"><title>{}</title>'
        '<text x="0" y="14" font-size="12" font-weight="bold">{}: {}</text>'
        '<rect x="0" y="22" width="{}" height="18" fill="#eee"/>'
        '<rect x="0" y="22" width="{}" height="18" fill="#417690"/></svg>',
        width,
        width,
        title,
        text,
        title,
        title,
        text,
        width,
        _n(width * shown),
    )
