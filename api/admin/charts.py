"""Small inline SVG charts, built on the server from numbers (labels are escaped): no script."""
from __future__ import annotations

from html import escape

from markupsafe import Markup


def _num(value) -> float:
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number and number not in (float("inf"), float("-inf")) else 0.0


def bar_chart(values: list, labels: list[str] | None = None, *, width: int = 360, height: int = 90,
              title: str = "", unit: str = "", css: str = "bar") -> Markup:
    """Vertical bars, one per value, scaled to the largest; each bar's tooltip says its label and value."""
    numbers = [_num(v) for v in values]
    labels = labels or [str(i) for i in range(len(numbers))]
    top = max(numbers, default=0.0) or 1.0
    n = max(len(numbers), 1)
    step = width / n
    bar = max(step - 1.0, 1.0)
    parts = [f'<svg class="chart {escape(css)}" viewBox="0 0 {width} {height + 14}" width="{width}" '
             f'height="{height + 14}" role="img" aria-label="{escape(title)}">']
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    for i, value in enumerate(numbers):
        h = 0.0 if value <= 0 else max(value / top * height, 1.0)
        label = escape(f"{labels[i] if i < len(labels) else i}: {value:g}{unit}")
        parts.append(f'<rect x="{i * step:.1f}" y="{height - h:.1f}" width="{bar:.1f}" height="{h:.1f}">'
                     f"<title>{label}</title></rect>")
    parts.append(f'<text x="0" y="{height + 12}">{escape(f"max {top:g}{unit}")}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def progress_bar(done, total, *, width: int = 300, height: int = 14) -> Markup:
    """A horizontal bar: `done` of `total` (may pass 100 %: the bar is then full)."""
    d, t = _num(done), _num(total)
    fraction = 0.0 if t <= 0 else min(d / t, 1.0)
    return Markup(
        f'<svg class="progress" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{fraction * 100:.0f}%"><rect class="track" x="0" y="0" width="{width}" height="{height}"/>'
        f'<rect class="fill" x="0" y="0" width="{fraction * width:.1f}" height="{height}"/></svg>'
    )
