"""The ensemble's HTML report: probabilities, outcome histograms with the spec's limits,
the inputs that drive failures, and every batch. One self-contained file (inline SVG)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from twin.ensemble.analysis import Analysis, Spread
from twin.ensemble.spec import OUTCOMES, ReleaseSpec

__all__ = ["fmt", "forecast_panel", "histogram_svg", "render_report"]

W, H = 420, 190
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 14, 40


def fmt(value: Any) -> str:
    """A figure as a reader quotes it (3 significant digits)."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.3g}"
    return escape(str(value))


def _bins(values: Sequence[float], limits: Sequence[float]) -> tuple[float, float, list[int]]:
    lo, hi = min(values), max(values)
    for x in limits:  # the limits stay in view
        if math.isfinite(x):
            lo, hi = min(lo, x), max(hi, x)
    if hi == lo:
        lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
    n_bins = max(5, min(30, int(math.sqrt(len(values))) + 1))
    width = (hi - lo) / n_bins
    counts = [0] * n_bins
    for v in values:
        counts[min(n_bins - 1, int((v - lo) / width))] += 1
    return lo, hi, counts


def histogram_svg(spread: Spread, limits: Sequence[tuple[str, float]], unit: str) -> str:
    """A histogram of one outcome, with each limit as a red line and its label."""
    lo, hi, counts = _bins(spread.values, [x for _, x in limits])
    top = max(counts) or 1
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(v: float) -> float:
        return LEFT + (v - lo) / (hi - lo) * pw

    bw = pw / len(counts)
    bars = "".join(
        f'<rect x="{LEFT + i * bw:.1f}" y="{TOP + ph - c / top * ph:.1f}" '
        f'width="{max(bw - 1, 0.5):.1f}" height="{c / top * ph:.1f}" fill="#4a78b0"/>'
        for i, c in enumerate(counts)
        if c
    )
    ticks = "".join(
        f'<line x1="{x(t):.1f}" y1="{TOP + ph}" x2="{x(t):.1f}" y2="{TOP + ph + 4}" '
        f'stroke="#333"/><text x="{x(t):.1f}" y="{TOP + ph + 16}" font-size="10" '
        f'text-anchor="middle">{t:.3g}</text>'
        for t in (lo + k * (hi - lo) / 4 for k in range(5))
    )
    marks = "".join(
        f'<line x1="{x(v):.1f}" y1="{TOP}" x2="{x(v):.1f}" y2="{TOP + ph}" stroke="#c0392b" '
        f'stroke-width="2" stroke-dasharray="5,3"/><text x="{x(v) + 3:.1f}" y="{TOP + 10}" '
        f'font-size="10" fill="#c0392b">{escape(label)}</text>'
        for label, v in limits
        if math.isfinite(v)
    )
    axis_label = escape(f"{OUTCOMES[spread.outcome].label}" + (f" ({unit})" if unit else ""))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="histogram of {escape(spread.outcome)}">'
        f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="#333"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + ph}" stroke="#333"/>'
        f'<text x="{LEFT - 6}" y="{TOP + 8}" font-size="10" text-anchor="end">{top}</text>'
        f'<text x="{LEFT - 6}" y="{TOP + ph}" font-size="10" text-anchor="end">0</text>'
        f'<text x="12" y="{TOP + ph / 2:.0f}" font-size="10" transform="rotate(-90 12 '
        f'{TOP + ph / 2:.0f})" text-anchor="middle">batches</text>'
        f"{bars}{ticks}{marks}"
        f'<text x="{LEFT + pw / 2:.0f}" y="{H - 6}" font-size="11" '
        f'text-anchor="middle">{axis_label}</text></svg>'
    )


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _pct(p: float | None, ci: tuple[float, float] | None = None) -> str:
    if p is None:
        return "—"
    text = f"{100 * p:.1f} %"
    if ci is not None:
        text += f" (95 % CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f} %)"
    return text


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f0f0f0}
.big{font-size:20px;font-weight:600}.hist{display:inline-block;margin:6px}
.fail{color:#c0392b}.pass{color:#1e8449}.note{color:#555;font-size:13px}
"""


def render_report(
    a: Analysis,
    spec: ReleaseSpec,
    results: list[dict[str, Any]],
    definition: dict[str, Any],
) -> str:
    """The whole report as one HTML page."""
    by_outcome: dict[str, list[tuple[str, float]]] = {}
    for lim in spec.limits:
        if lim.min is not None:
            by_outcome.setdefault(lim.outcome, []).append((f"min {lim.low:.3g}", lim.low))
        if lim.max is not None:
            by_outcome.setdefault(lim.outcome, []).append((f"max {lim.high:.3g}", lim.high))
    if a.ready_by is not None:
        by_outcome.setdefault("duration", []).append((f"day {a.ready_by:g}", a.ready_by))
    head = (
        f"<h1>What if: {escape(str(definition.get('recipe_id')))} "
        f"{escape(str(definition.get('recipe_version')))}, {a.batches} twin batches</h1>"
        f'<p class="note">Spec <b>{escape(spec.spec)}</b> {escape(spec.source)}; bench '
        f"{escape(str(definition.get('bench')))}; base seed {fmt(definition.get('seed'))}; "
        f"varied: {escape(', '.join(definition.get('vary') or []) or 'donors and noise only')}"
        "</p>"
    )
    probs = (
        f'<p class="big">P(release) = {_pct(a.p_release, a.p_release_ci)}</p>'
        + (
            f'<p class="big">P(releasable dose by day {a.ready_by:g}) = '
            f"{_pct(a.p_ready, a.p_ready_ci)}</p>"
            if a.ready_by is not None
            else ""
        )
        + _table(
            ["limit", "batches failing it"],
            [
                (escape(f"{OUTCOMES[lim.outcome].label} {lim.text}"), a.limit_failures[lim.outcome])
                for lim in spec.limits
            ]
            + [(escape(f"ended {s}"), c) for s, c in sorted(a.states.items()) if s != "Complete"],
        )
    )
    curve = _table(
        ["day", "P(released and harvested by then)"],
        [(f"{d:g}", _pct(p)) for d, p in a.ready_curve],
    )
    hists = "".join(
        f'<div class="hist">{histogram_svg(s, by_outcome.get(k, []), OUTCOMES[k].unit)}</div>'
        for k, s in a.spreads.items()
    )
    spread_rows = [
        (
            escape(OUTCOMES[k].label),
            escape(OUTCOMES[k].unit),
            s.n,
            fmt(s.mean),
            fmt(s.sd),
            fmt(s.p5),
            fmt(s.p50),
            fmt(s.p95),
            fmt(s.low),
            fmt(s.high),
        )
        for k, s in a.spreads.items()
    ]
    if a.drivers:
        drivers = _table(
            ["input", "effect on failing (rank-biserial)", "mean, failing", "mean, passing"],
            [
                (escape(d.name), f"{d.effect:+.2f}", fmt(d.mean_failed), fmt(d.mean_passed))
                for d in a.drivers
            ],
        )
    else:
        drivers = '<p class="note">No failing batches, or no passing ones: nothing to compare.</p>'
    batch_rows = []
    for r in results:
        o, p = r["outcome"], r["plan"]
        misses = spec.failures(o)
        verdict = (
            '<span class="pass">release</span>'
            if not misses
            else f'<span class="fail">{escape(", ".join(misses))}</span>'
        )
        if o.get("why_held"):
            verdict += f'<br><span class="note">{escape("; ".join(o["why_held"]))}</span>'
        batch_rows.append(
            (
                p["index"],
                escape(str(o.get("state"))),
                fmt(o.get("duration")),
                fmt(o.get("viable_cells")),
                fmt(o.get("viability")),
                fmt(o.get("car_positive")),
                fmt(o.get("dose_per_kg")),
                fmt(o.get("vector_copies")),
                verdict,
            )
        )
    errors = (
        "<h2>Batches that raised</h2><ul>"
        + "".join(f"<li>{escape(e)}</li>" for e in a.errors)
        + "</ul>"
        if a.errors
        else ""
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>whatif "
        f"{escape(str(definition.get('recipe_id')))}</title><style>{_CSS}</style></head><body>"
        f"{head}<h2>Release</h2>{probs}<h2>Ready by day</h2>{curve}"
        f"<h2>Outcomes</h2>{hists}"
        + _table(
            ["outcome", "unit", "n", "mean", "sd", "p5", "median", "p95", "min", "max"], spread_rows
        )
        + f"<h2>What drives failures</h2>{drivers}{errors}"
        "<h2>Every batch</h2>"
        + _table(
            [
                "batch",
                "state",
                "day",
                "viable cells",
                "viability %",
                "CAR+ %",
                "dose/kg",
                "VCN",
                "verdict",
            ],
            batch_rows,
        )
        + "</body></html>"
    )


def forecast_panel(record: dict[str, Any] | None) -> str:
    """A batch's latest forecast as the station and the control site show it (a full
    forecast or its brief; anything missing shows as a dash, never as an error)."""
    if not record:
        return (
            "<p id='forecast'>no forecast yet (<code>poc-twin forecast JOURNAL --spec SPEC</code>"
            " makes one)</p>"
        )

    def number(key: str) -> float | None:
        value = record.get(key)
        return float(value) if isinstance(value, int | float) else None

    def pct(value: Any) -> str:
        return f"{100 * value:.0f} %" if isinstance(value, int | float) else "—"

    hd = record.get("harvest_day") if isinstance(record.get("harvest_day"), dict) else None
    harvest = (
        f"day {fmt(hd.get('p50'))} (90 %: {fmt(hd.get('p5'))}–{fmt(hd.get('p95'))})"
        if hd
        else "no matching twin batch harvested"
    )
    interval = record.get("p_release_interval")
    low, high = (
        interval if isinstance(interval, list | tuple) and len(interval) == 2 else (None, None)
    )
    ready = ""
    if number("ready_by") is not None:
        ready = (
            f"<tr><th>P(releasable by day {fmt(number('ready_by'))})</th>"
            f"<td>{pct(record.get('p_ready'))}</td></tr>"
        )
    made = number("made_at_day")
    return (
        "<table id='forecast' class='forecast'>"
        f"<tr><th>Harvest</th><td>{harvest}</td></tr>"
        f"<tr><th>P(release, {escape(str(record.get('spec', '?')))})</th>"
        f"<td>{pct(record.get('p_release'))} (90 %: {pct(low)}–{pct(high)})</td></tr>"
        f"{ready}"
        f"<tr><th>Made</th><td>on day {fmt(made)} from {fmt(record.get('samples_used'))} "
        f"sample(s), {fmt(number('effective_batches'))} effective of "
        f"{fmt(record.get('library_batches'))} twin batches</td></tr></table>"
    )
