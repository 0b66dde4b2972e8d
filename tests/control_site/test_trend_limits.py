"""Alarm limits in the trends (issue 15): the recipe's as a shaded band, a phase's own
monitors over the batch time that phase ran, and every label of the plot inside it.

A real batch of the smoke recipe, with monitors on its culture phase, is stored as its
forwarder publishes it and read from the batch page as a signed-in supervisor reads it.
The trends are then drawn in a real headless Chromium, where every text of each plot
must lie inside the plot (a long axis title, the viable-cell axis, a phase's limit that
starts near the right edge).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from browser import Chromium
from dashboard import messages_of, page_as_supervisor, users_file
from site_journals import REPO, poc_twin
from test_dashboard import served

from twin.control_site.boards import StoredBoard
from twin.control_site.store import open_store
from twin.journal import read_events
from twin.report.svg import trend_svg

DAY = 86400.0
PHASE_MONITORS = (
    "            monitors:\n"
    "              - {name: culture pH, pv: ph, low: 6.9, high: 7.6}\n"
    "              - {name: culture DO, pv: do_pct, low: 25}\n"
)


def phase_monitored_batch(folder: Path) -> Path:
    """The smoke recipe, its culture phase with monitors of its own, run on the twin."""
    text = (Path(REPO) / "recipes" / "smoke.yaml").read_text()
    anchor = "            do_setpoint_pct: 40\n"
    assert anchor in text
    recipe = folder / "phase-monitors.yaml"
    recipe.write_text(
        text.replace(
            "procedure:\n",
            "monitors:\n  - {name: culture temperature, pv: "
            "temperature_c, low: 35.0, high: 38.5}\n\nprocedure:\n",
            1,
        ).replace(anchor, anchor + PHASE_MONITORS, 1)
    )
    journal = folder / "pm1.sqlite"
    ran = poc_twin("run", str(recipe), "--journal", str(journal), "--batch-id", "pm1", "-q")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return journal


def test_a_phase_s_own_limits_are_drawn_over_the_span_it_ran(tmp_path: Path) -> None:
    journal = phase_monitored_batch(tmp_path)
    events = list(read_events(journal))
    culture = [
        e.batch_time
        for e in events
        if e.kind == "transition"
        and e.source.endswith(":culture")
        and e.source.startswith("phase:")
        and e.data.get("to") in ("Running", "Complete")
    ]
    start, end = culture[0], culture[-1]
    assert 0 < start < end < events[-1].batch_time
    # the control site's fold: the phase's limits from its start to its end, nothing else
    board = StoredBoard("pm1")
    for e in events:
        board.apply(e)
    assert board.phase_lines["ph"] == [
        ("culture pH low", 6.9, start, end),
        ("culture pH high", 7.6, start, end),
    ]
    assert board.phase_lines["do_pct"] == [("culture DO low", 25.0, start, end)]
    assert "temperature_c" not in board.phase_lines  # the recipe's own stay batch-wide

    store = open_store(str(tmp_path / "control.sqlite"))
    try:
        store.ingest(messages_of(journal, "site-a", "cleanroom-1", "pm1"))

        page = served(store, users_file(tmp_path), page_as_supervisor("/batch/site-a/pm1"))
    finally:
        store.close()
    trends = page.split("<h2>Trends</h2>")[1].split("<h2>Alarms</h2>")[0]
    ph = trends.split("<h3>pH</h3>")[1].split("</svg>")[0]
    # a band over the span the phase ran, between its limits, and its limits as lines there
    band = re.search(r'<rect class="band phase" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', ph)
    assert band is not None, ph[:400]
    assert "within alarm limits while culture pH applied: 6.9 to 7.6" in ph
    t_end = max(board.view.batch_time, 1.0)
    plot_w = 860 - 76 - 16
    assert abs(float(band.group(1)) - (76 + plot_w * start / t_end)) < 0.2
    assert abs(float(band.group(2)) - plot_w * (end - start) / t_end) < 0.2
    assert ph.count('<g class="limit phase">') == 2 and "culture pH high 7.6" in ph
    assert 'class="band"' not in ph  # no recipe-wide pH limit: no band outside the phase
    do = trends.split("<h3>Dissolved oxygen (% air sat.)</h3>")[1].split("</svg>")[0]
    assert "within alarm limits while culture DO applied: 25 to -" in do
    temperature = trends.split("<h3>Temperature (°C)</h3>")[1].split("</svg>")[0]
    assert "within alarm limits: 35 to 38.5" in temperature  # the recipe's, batch-wide
    assert "band phase" not in temperature
    assert "darker where a phase's own limits applied" in trends  # the legend says so


def test_every_label_of_a_trend_is_drawn_inside_it_in_chromium(tmp_path: Path) -> None:
    vcd = [(h * 3600.0, 3e5 * 1.02**h) for h in range(0, 240, 2)]
    do = [(h * 3600.0, 40.0 + (h % 7) * 3) for h in range(0, 240)]
    plots = [
        trend_svg("Viable cell density", "cells/mL", vcd, [], end_time=10 * DAY),
        trend_svg(
            "A long one",
            "viable cells per millilitre of culture, counted after the perfusion's wash",
            vcd[:18],
            [],
            end_time=1.5 * DAY,  # hours on the axis
        ),
        trend_svg(
            "Dissolved oxygen",
            "% air sat.",
            do,
            [(0.0, 40.0)],
            end_time=10 * DAY,
            limits=[("dissolved oxygen low", 15.0)],
            phase_limits=[
                ("expansion DO low", 25.0, 2 * DAY, 8 * DAY),
                ("harvest dissolved oxygen high", 80.0, 9.7 * DAY, None),  # at the right edge
            ],
        ),
    ]
    page = tmp_path / "trends.html"
    page.write_text("<html><body>" + "".join(f"<div>{p}</div>" for p in plots) + "</body></html>")

    async def outside() -> list[str]:
        async with Chromium() as browser:
            tab = await browser.open(page.as_uri())
            return list(
                await tab.evaluate(
                    "[...document.querySelectorAll('svg.trend')].flatMap(svg => {"
                    " const s = svg.getBoundingClientRect();"
                    " return [...svg.querySelectorAll('text')].filter(t => {"
                    "  const r = t.getBoundingClientRect();"
                    "  return r.left < s.left || r.right > s.right + 0.5"
                    "   || r.top < s.top || r.bottom > s.bottom + 0.5;"
                    " }).map(t => t.textContent); })"
                )
            )

    assert asyncio.run(outside()) == []
    long_title = plots[1]
    assert '<g class="axis-title"><title>viable cells per millilitre' in long_title
    assert "…</text>" in long_title and long_title.count('transform="rotate(-90') == 2
    assert "batch time (h)" in long_title and "batch time (day)" in plots[0]
