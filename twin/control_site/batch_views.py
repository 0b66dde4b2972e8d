"""One batch's page: state and the acts it allows, process values, trends, alarms, commands.

Folded from the events the control site stored (:mod:`.boards`), the same fold the
operator station uses on the journal, so supervisor and operator read the same
alarms, acknowledgements and limits. Trends are the batch record's
(:func:`twin.report.svg.trend_svg`): batch time on the x axis, the setpoint as a
step line, the band within the recipe's alarm limits shaded green and each limit a red
dashed line, holds shaded, alarms marked. Only the acts that make sense in the batch's
state are offered.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from twin.control_site.boards import Boards, StoredBoard
from twin.control_site.live import batch_token, live_region
from twin.control_site.pages import act_button, fmt, page, sign_dialog, table
from twin.control_site.plans import Plans
from twin.control_site.store import Store
from twin.control_site.supervision import no_hold_why
from twin.control_site.views import (
    data_age,
    head_cell,
    overview_rows,
    phase_name,
    requests_html,
)
from twin.ensemble.html import forecast_panel
from twin.report.record import unit_of
from twin.report.svg import trend_svg
from twin.station.pages import LABELS
from twin.station.sessions import Session

__all__ = ["batch_live", "batch_page", "hold_offered"]

#: Trends on the batch page, in the order a supervisor reads them.
TREND_PVS = ("temperature_c", "do_pct", "ph", "viable_cells_per_ml", "volume_ml")


def hold_offered(row: dict[str, Any]) -> bool:
    """Whether 'request hold' makes sense: the batch has not ended, is not held already and
    nothing below its procedure is held (the supervision refuses the same)."""
    return no_hold_why(row["procedure_state"], row["state"], row["ended"]) is None


def _acts(row: dict[str, Any], site: str, batch: str) -> str:
    if hold_offered(row):
        return (
            "<p id='acts'>"
            + act_button(
                "Request hold",
                f"/batch/{site}/{batch}/hold",
                f"hold batch {batch} at site {site}",
                "The site's batch goes to Held (equipment to its safe state) and records the "
                "hold as a command by control-site:<you> with your reason; its operators "
                "restart it.",
                danger=True,
            )
            + "</p>"
        )
    if row["ended"]:
        why = f"The batch has ended {row['state']}: no hold."
    else:
        why = f"The batch is {row['state']}: there is nothing to hold."
        if row["procedure_state"] == "Running":
            why += " Its operators restart the held element at the site."
    return f"<p id='no-hold' class='muted'>{escape(why)}</p>"


def _process_values(board: StoredBoard) -> str:
    rows = []
    for pv, value, unit, setpoint, limit in board.process_values():
        low = fmt(limit.low) if limit and limit.low is not None else "-"
        high = fmt(limit.high) if limit and limit.high is not None else "-"
        beyond = (
            limit is not None
            and isinstance(value, int | float)
            and (
                (limit.low is not None and value < limit.low)
                or (limit.high is not None and value > limit.high)
            )
        )
        shown = f"<span class='bad'>{fmt(value)}</span>" if beyond else fmt(value)
        rows.append((escape(LABELS.get(pv, pv)), shown, escape(unit), fmt(setpoint), low, high))
    head = ("process value", "value", "unit", "setpoint", "low alarm", "high alarm")
    return table(head, rows, "process-values", "no readings yet")


def _trends(board: StoredBoard) -> str:
    alarms = [(a.batch_time, a.message) for a in board.alarms.values()]
    parts = []
    for pv in TREND_PVS:
        points = board.trends.get(pv, [])
        if not points:
            continue
        label, unit = LABELS.get(pv, pv), unit_of(f"bioreactor.{pv}")
        title = label if unit == label else f"{label} ({unit})"
        parts.append(f"<h3>{escape(title)}</h3>")
        parts.append(
            trend_svg(
                label,
                unit,
                points,
                board.sp_history.get(pv, []),
                end_time=board.view.batch_time,
                holds=board.holds,
                alarms=alarms,
                limits=board.limit_lines.get(pv, []),
                phase_limits=board.phase_lines.get(pv, []),
            )
        )
    legend = (
        "<p class='muted'>Blue: process value; green dashed: setpoint; green band: within "
        "the recipe's alarm limits (red dashed lines), darker where a phase's own limits applied "
        "while it ran; orange: held; red marks: alarms.</p>"
    )
    return legend + "".join(parts) if parts else "<p class='muted'>no readings yet</p>"


def _when(wall_time: str) -> str:
    """A journal wall time as a person reads it: 2026-12-05 16:20 UTC."""
    return f"{wall_time[:10]} {wall_time[11:16]} UTC" if len(wall_time) >= 16 else wall_time


def _alarms(board: StoredBoard, row: dict[str, Any], site: str, batch: str) -> str:
    """The alarm list; an alarm not yet acknowledged of a batch still running has a button
    to acknowledge it from here (signed, sent to the site, journalled there)."""
    rows = []
    for a in sorted(board.alarms.values(), key=lambda a: -a.seq):
        level = "<span class='bad'>critical</span>" if a.critical else "alarm"
        act = ""
        if a.acknowledged_by:
            ack = (
                f"<span class='ok'>{escape(a.acknowledged_by)}</span>, "
                f"{escape(_when(a.acknowledged_at))}: {escape(a.comment)}"
            )
        else:
            ack = "<span class='warn'>not acknowledged</span>"
            if not row["ended"]:
                act = act_button(
                    "Acknowledge",
                    f"/batch/{site}/{batch}/alarm/{a.seq}/acknowledge",
                    f"acknowledge alarm {a.seq} ({a.message}) of batch {batch} at site {site}",
                    "The site's batch journals the acknowledgement as control-site:<you> with "
                    "your reason as its comment; the alarm's cause is not changed.",
                )
        rows.append(
            (
                str(a.seq),
                f"{a.batch_time / 86400:.2f}",
                escape(a.source),
                escape(a.message),
                level,
                "cleared" if a.cleared else "<span class='bad'>active</span>",
                ack,
                act,
            )
        )
    head = (
        "event",
        "day",
        "source",
        "alarm",
        "level",
        "now",
        "acknowledged (who, when, comment)",
        "",
    )
    return table(head, rows, "alarms", "no alarms")


def _commands(store: Store, site: str, batch: str) -> str:
    """The batch's operator commands from its journal, with who, why and the outcome."""
    found = store.query(
        "SELECT seq, batch_time, data FROM events WHERE site=? AND batch=? AND kind='command' "
        "ORDER BY seq",
        (site, batch),
    )
    rows = []
    for seq, bt, data in found:
        d = json.loads(data)
        accepted = d.get("accepted", True)
        outcome = (
            "<span class='ok'>accepted</span>"
            if accepted
            else f"<span class='bad'>refused (state {escape(str(d.get('state', '?')))})</span>"
        )
        rows.append(
            (
                str(seq),
                f"{float(bt) / 86400:.2f}",
                escape(str(d.get("operator", "?"))),
                escape(str(d.get("command", "?"))),
                escape(str(d.get("level") or "procedure")),
                escape(str(d.get("reason", ""))),
                escape(str(d.get("via") or "")),
                outcome,
            )
        )
    head = ("event", "day", "who", "command", "level", "reason", "via", "outcome")
    return table(head, rows, "commands", "no operator commands")


def batch_live(
    store: Store, boards: Boards, site: str, batch: str, plans: Plans | None = None
) -> str | None:
    """One batch's changing part: state and acts, attention, head, values, trends, tables."""
    found = [
        r for r in overview_rows(store, plans=plans) if r["site"] == site and r["batch"] == batch
    ]
    if not found:
        return None
    r = found[0]
    board = boards.board(store, site, batch)
    flags = r["chain_flags"]
    shown = [a for a in r["attention"] if not a.startswith("chain: ")]
    shown += [f"chain: {c}" for c in flags[:50]]
    if len(flags) > 50:
        shown.append(f"chain: and {len(flags) - 50} more")
    attention = "".join(f"<li class='bad'>{escape(a)}</li>" for a in shown)
    planned = (
        f" of at most {r['planned_days']:.1f} planned" if r["planned_days"] is not None else ""
    )
    day_cls = " class='bad'" if r["past_recipe"] else ""
    return (
        f"<p>site {escape(site)}, unit {escape(r['unit'])}, recipe {fmt(r['recipe'])} — state "
        f"<b id='state'>{fmt(r['state'])}</b>, phase {fmt(phase_name(r['phase']))}, "
        f"<span id='day'{day_cls}>day {fmt(r['day'])}{planned}</span>, "
        f"event <span id='seq'>{fmt(r['seq'])}</span>, data age "
        f"<span id='age'>{data_age(r['age_s'])}</span>, "
        f"{'online' if r['online'] else 'offline'}</p>"
        f"{_acts(r, site, batch)}"
        f"<ul id='attention'>{attention}</ul>"
        f"<p id='head'>anchored head: {head_cell(r['head'], r['seq'])}</p>"
        f"<h2>Process values</h2>{_process_values(board)}"
        f"<h2>Forecast</h2>{forecast_panel(r['forecast'])}"
        f"<h2>Trends</h2>{_trends(board)}"
        f"<h2>Alarms</h2>{_alarms(board, r, site, batch)}"
        f"<h2>Operator commands</h2>{_commands(store, site, batch)}"
        f"<h2>Requests from the control site</h2>{requests_html(store, site, batch)}"
    )


def batch_page(
    store: Store,
    boards: Boards,
    site: str,
    batch: str,
    refresh_s: float = 2.0,
    *,
    session: Session | None = None,
    plans: Plans | None = None,
) -> str | None:
    token = batch_token(store, site, batch)
    inner = batch_live(store, boards, site, batch, plans)
    if inner is None:
        return None
    api = f"/api/batch/{site}/{batch}"
    record = f"/batch/{escape(site)}/{escape(batch)}/record"
    body = (
        f"<p><a href='/'>all sites</a> · <a id='record-link' href='{record}' target='_blank'>"
        f"batch record</a> (built from the events the control site holds)</p>"
        f"<h1>Batch {escape(batch)} at {escape(site)}</h1>"
        f"{live_region(api, token, refresh_s, inner)}"
        f"{sign_dialog(session) if session is not None else ''}"
    )
    return page(f"{batch} at {site}", body, session)
