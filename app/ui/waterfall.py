"""A SHAP waterfall chart as inline SVG, drawn from a decision's audit row (no JavaScript).

From the model's expected value (log-odds) each of the top features adds its SHAP value; the
remaining features are one "other" bar; the last bar ends at the decision's margin, whose
probability is the score. Pure: the same audit row always draws the same chart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

from app.scoring.reasons import describe

ROW_H, LABEL_W, CHART_W, VALUE_W = 26, 460, 400, 70


@dataclass(frozen=True)
class Bar:
    label: str
    start: float
    end: float

    @property
    def delta(self) -> float:
        return self.end - self.start


def bars(
    expected: float, shap: Mapping[str, float], features: Mapping[str, float | None], top: int = 10
) -> list[Bar]:
    order = sorted(shap, key=lambda n: (-abs(shap[n]), n))
    out, level = [], expected
    for name in order[:top]:
        out.append(Bar(describe(name, features.get(name)), level, level + shap[name]))
        level += shap[name]
    rest = order[top:]
    if rest:
        delta = sum(shap[n] for n in rest)
        out.append(Bar(f"{len(rest)} other features", level, level + delta))
    return out


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def waterfall_svg(
    expected: float, shap: Mapping[str, float], features: Mapping[str, float | None], top: int = 10
) -> str:
    items = bars(expected, shap, features, top)
    margin = items[-1].end if items else expected
    points = [expected, margin, *(b.start for b in items), *(b.end for b in items)]
    lo, hi = min(points), max(points)
    pad = (hi - lo) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad

    def x(v: float) -> float:
        return LABEL_W + (v - lo) / (hi - lo) * CHART_W

    height = ROW_H * (len(items) + 3)
    width = LABEL_W + CHART_W + VALUE_W
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="waterfall" role="img" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}"'
        ' aria-label="SHAP waterfall: expected value to this decision">',
        _row(0, "Model expected value (log-odds)", x(expected), x(expected), f"{expected:+.3f}", "base"),
    ]
    for i, b in enumerate(items, start=1):
        cls = "up" if b.delta > 0 else "down"
        parts.append(_row(i, b.label, x(b.start), x(b.end), f"{b.delta:+.3f}", cls))
    last = len(items) + 1
    parts.append(
        _row(
            last,
            f"This decision: score {sigmoid(margin):.3f}",
            x(margin),
            x(margin),
            f"{margin:+.3f}",
            "base",
        )
    )
    zero = x(0.0) if lo < 0 < hi else None
    if zero is not None:
        parts.append(f'<line x1="{zero:.1f}" y1="0" x2="{zero:.1f}" y2="{ROW_H * (last + 1)}" class="axis"/>')
    parts.append(
        f'<text x="{LABEL_W}" y="{ROW_H * (last + 2)}" class="note">log-odds; red pushes towards fraud,'
        " green towards genuine</text></svg>"
    )
    return "".join(parts)


def _row(i: int, label: str, x0: float, x1: float, value: str, cls: str) -> str:  # noqa: PLR0917 - one row
    y = i * ROW_H
    left, w = min(x0, x1), max(abs(x1 - x0), 2.0)
    return (
        f'<g class="bar {cls}"><text x="{LABEL_W - 8}" y="{y + 17}" text-anchor="end">{escape(label)}</text>'
        f'<rect x="{left:.1f}" y="{y + 4}" width="{w:.1f}" height="{ROW_H - 8}"/>'
        f'<text x="{LABEL_W + CHART_W + 6}" y="{y + 17}">{escape(value)}</text></g>'
    )
