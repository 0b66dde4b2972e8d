"""Inline SVG trend plots: a process value against its setpoint, inside its alarm band (the
range between the low and high alarm limits, shaded), holds shaded, alarms marked. A
phase's own monitors (active only while that phase runs) are drawn over the span it ran:
the band narrowed to what both the recipe's and the phase's limits allow, darker.

Plain SVG text, no plotting library and no script, so the batch record is one
self-contained file that renders the same in any browser and prints well.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

__all__ = ["downsample", "trend_svg"]

W, H = 860, 214
LEFT, RIGHT, TOP, BOTTOM = 76, 16, 14, 34
#: Rough width of one character at the plot's font size (11 px serif or sans).
CHAR_W = 6.0
#: A value's pixel position on one axis.
Scale = Callable[[float], float]
#: Setpoint changes beyond which a setpoint is drawn as a (downsampled) line, not steps.
MAX_STEPS = 400


def downsample(
    points: Sequence[tuple[float, float]], buckets: int = 400
) -> list[tuple[float, float]]:
    """At most ~2 points per time bucket (its min and max, in time order): spikes survive."""
    if len(points) <= 2 * buckets:
        return list(points)
    t0, t1 = points[0][0], points[-1][0]
    span = (t1 - t0) or 1.0
    out: list[tuple[float, float]] = []
    group: list[tuple[float, float]] = []
    current = 0
    for p in points:
        b = min(buckets - 1, int((p[0] - t0) / span * buckets))
        if b != current and group:
            out.extend(_extremes(group))
            group = []
        current = b
        group.append(p)
    out.extend(_extremes(group))
    return out


def _extremes(group: list[tuple[float, float]]) -> list[tuple[float, float]]:
    lo = min(group, key=lambda p: p[1])
    hi = max(group, key=lambda p: p[1])
    return sorted({lo, hi})


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    """A tick label short enough to stay clear of the axis title: 3 digits, or 2.5e6."""
    if abs(v) < 1e3:
        return f"{v:.3g}"
    if abs(v) < 1e5:
        return f"{v:.0f}"  # 1500, not 1.5e+03
    mantissa, exponent = f"{v:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def trend_svg(
    title: str,
    unit: str,
    points: Sequence[tuple[float, float]],
    setpoint: Sequence[tuple[float, float | None]],
    *,
    end_time: float,
    holds: Sequence[tuple[float, float | None]] = (),
    alarms: Sequence[tuple[float, str]] = (),
    limits: Sequence[tuple[str, float]] = (),
    phase_limits: Sequence[tuple[str, float, float, float | None]] = (),
) -> str:
    """One trend as an ``<svg>`` element; time axis in hours or days of batch time; the alarm
    band shaded between the low and high alarm limits (to the plot's edge where only one
    side has a limit), each limit a red dashed line with its name.

    ``phase_limits`` are (label, value, start, end) of a phase's monitors: drawn from the
    batch time the phase started to the one it ended (None: it runs still), where the band
    is narrowed to the range no limit, the recipe's or the phase's, is beyond."""
    pv = downsample(points)
    t_end = max(end_time, pv[-1][0] if pv else 0.0, 1.0)
    days = t_end > 2 * 86400
    scale, x_unit = (86400.0, "day") if days else (3600.0, "h")
    values = [v for _, v in pv] + [v for _, v in setpoint if v is not None]
    values += [v for _, v in limits] + [v for _, v, _, _ in phase_limits]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + pw * t / t_end

    def y(v: float) -> float:
        return TOP + ph * (1 - (v - lo) / (hi - lo))

    parts = [
        f'<svg class="trend" viewBox="0 0 {W} {H}" width="{W}" height="{H}" font-size="11" '
        f'role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>',
    ]
    band = _band(limits)
    if band is not None:
        parts.append(_band_rect(band, LEFT, LEFT + pw, y, "band", "within alarm limits"))
    spans = _phase_spans(phase_limits, t_end)
    for (start, end), labelled in spans.items():
        narrowed = _band([*limits, *labelled])
        if narrowed is not None:
            names = ", ".join(sorted({_monitor(label) for label, _ in labelled}))
            what = f"within alarm limits while {names} applied"
            parts.append(_band_rect(narrowed, x(start), x(end), y, "band phase", what))
    for start, end in holds:
        x0, x1 = x(start), x(end if end is not None else t_end)
        parts.append(
            f'<rect class="hold" x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 1.5):.1f}" '
            f'height="{ph}" fill="#f6d7a7" opacity="0.7"><title>hold</title></rect>'
        )
    for v in _nice_ticks(lo, hi):
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{_fmt(v)}</text>'
        )
    for t in _nice_ticks(0.0, t_end / scale, 8):
        parts.append(
            f'<text x="{x(t * scale):.1f}" y="{TOP + ph + 14}" text-anchor="middle">{t:g}</text>'
        )
    parts.append(
        f'<text class="axis-title" x="{LEFT + pw / 2:.0f}" y="{H - 4}" text-anchor="middle">'
        f"batch time ({x_unit})</text>"
    )
    parts.append(_y_title(unit, TOP + ph / 2, ph))
    if pv:
        coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pv)
        parts.append(f'<polyline class="pv" points="{coords}" fill="none" stroke="#1f5fa8"/>')
    if setpoint:
        parts.append(_step_path(setpoint, t_end, x, y))
    for label, value in limits:
        parts.append(_limit_line(label, value, LEFT, LEFT + pw, y, "limit"))
    for (start, end), labelled in spans.items():
        for label, value in labelled:
            parts.append(_limit_line(label, value, x(start), x(end), y, "limit phase"))
    for t, text in alarms:
        parts.append(
            f'<g class="alarm"><line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP}" y2="{TOP + ph}" '
            f'stroke="#c0392b" stroke-width="1.5"/><path d="M{x(t) - 5:.1f},{TOP} h10 l-5,8 z" '
            f'fill="#c0392b"/><title>{escape(text)}</title></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _band(limits: Sequence[tuple[str, float]]) -> tuple[float | None, float | None] | None:
    """(low, high) of the range no alarm limit is beyond (None: no limit on that side), from
    labels ending in 'low' or 'high'; None when there is no limit at all, or no such range."""
    lows = [v for label, v in limits if label.endswith("low")]
    highs = [v for label, v in limits if label.endswith("high")]
    if not lows and not highs:
        return None
    low, high = (max(lows) if lows else None, min(highs) if highs else None)
    if low is not None and high is not None and low >= high:
        return None  # the limits leave nothing within: no band, the lines say it
    return low, high


def _band_rect(
    band: tuple[float | None, float | None], x0: float, x1: float, y: Scale, cls: str, what: str
) -> str:
    """The shaded range between a band's limits, from x0 to x1 (to the plot's edge on an open
    side); its tooltip says what it is and the range."""
    top = TOP if band[1] is None else y(band[1])
    bottom = H - BOTTOM if band[0] is None else y(band[0])
    low = "-" if band[0] is None else _fmt(band[0])
    high = "-" if band[1] is None else _fmt(band[1])
    fill = "#b7dcc0" if "phase" in cls else "#dff0e3"
    return (
        f'<rect class="{cls}" x="{x0:.1f}" y="{top:.1f}" width="{max(x1 - x0, 1.5):.1f}" '
        f'height="{max(bottom - top, 0.0):.1f}" fill="{fill}">'
        f"<title>{escape(what)}: {low} to {high}</title></rect>"
    )


def _limit_line(label: str, value: float, x0: float, x1: float, y: Scale, cls: str) -> str:
    """A red dashed limit from x0 to x1, named; the name inside the plot whatever the span."""
    text = f"{label} {_fmt(value)}"
    right = LEFT + (W - LEFT - RIGHT)
    if x0 + 3 + len(text) * CHAR_W <= right:
        anchor, tx = ("end", x1 - 4) if cls == "limit" else ("start", x0 + 3)
    else:
        anchor, tx = "end", right - 4
    return (
        f'<g class="{cls}"><line x1="{x0:.1f}" x2="{x1:.1f}" y1="{y(value):.1f}" '
        f'y2="{y(value):.1f}" stroke="#c0392b" stroke-dasharray="2 3"/>'
        f'<text x="{tx:.1f}" y="{y(value) - 3:.1f}" text-anchor="{anchor}" fill="#c0392b">'
        f"{escape(text)}</text></g>"
    )


def _phase_spans(
    phase_limits: Sequence[tuple[str, float, float, float | None]], t_end: float
) -> dict[tuple[float, float], list[tuple[str, float]]]:
    """The phase limits grouped by the span of batch time they applied over."""
    spans: dict[tuple[float, float], list[tuple[str, float]]] = {}
    for label, value, start, end in phase_limits:
        spans.setdefault((start, t_end if end is None else end), []).append((label, value))
    return spans


def _monitor(label: str) -> str:
    """A limit's monitor: its label without the side."""
    for side in (" low", " high"):
        if label.endswith(side) and len(label) > len(side):
            return label[: -len(side)]
    return label


def _y_title(unit: str, mid: float, room: float) -> str:
    """The y axis' title, rotated beside the tick labels: on two lines if it is longer than
    the plot is high, cut with an ellipsis if even that is too long (the whole in a tooltip)."""
    fits = max(int(room / CHAR_W), 4)
    lines = [unit]
    if len(unit) > fits:
        words, first = unit.split(), ""
        while words and len(f"{first} {words[0]}".strip()) <= fits:
            first = f"{first} {words.pop(0)}".strip()
        rest = " ".join(words) if first else unit[fits:]
        lines = [first or unit[:fits], rest]
        if len(lines[1]) > fits:
            lines[1] = lines[1][: fits - 1] + "…"
    xs = (12,) if len(lines) == 1 else (10, 22)
    texts = "".join(
        f'<text x="{x}" y="{mid:.0f}" transform="rotate(-90 {x} {mid:.0f})" '
        f'text-anchor="middle">{escape(line)}</text>'
        for x, line in zip(xs, lines, strict=True)
    )
    return f'<g class="axis-title"><title>{escape(unit)}</title>{texts}</g>'


def _step_path(setpoint: Sequence[tuple[float, float | None]], t_end: float, x, y) -> str:  # type: ignore[no-untyped-def]
    if len(setpoint) > MAX_STEPS:  # a loop's output (e.g. DO cascade flows): draw it as a line
        line = downsample([(t, v) for t, v in setpoint if v is not None])
        setpoint = [(t, v) for t, v in line]
    segments = []
    for i, (t, v) in enumerate(setpoint):
        if v is None:
            continue
        t_next = setpoint[i + 1][0] if i + 1 < len(setpoint) else t_end
        segments.append(f"M{x(t):.1f},{y(v):.1f} H{x(t_next):.1f}")
        if i + 1 < len(setpoint) and setpoint[i + 1][1] is not None:
            segments.append(f"V{y(setpoint[i + 1][1]):.1f}")  # type: ignore[arg-type]
    return (
        f'<path class="sp" d="{" ".join(segments)}" fill="none" stroke="#27ae60" '
        f'stroke-width="1.5" stroke-dasharray="6 3"/>'
    )
