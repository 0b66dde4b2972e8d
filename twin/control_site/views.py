"""The dashboard's HTML: server-rendered pages, inline SVG trends, no CDN.

A control room may be offline from the internet; every page is one response
with its own styles and one small inline script that keeps it current
(:mod:`twin.control_site.live`), readable in any browser and in a headless one
under test. Each page's changing part is rendered by one function, used for the
first view and for every update.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from twin.clock import wall_now, wall_seconds
from twin.control_site.live import batch_token, live_region, overview_token
from twin.control_site.quarantine import quarantine_html
from twin.control_site.store import Store

__all__ = [
    "batch_live",
    "batch_page",
    "overview_live",
    "overview_page",
    "overview_rows",
    "svg_trend",
]

#: States after which a batch takes no command.
_FINAL_STATES = {"Complete", "Stopped", "Aborted"}
#: A running batch whose data is older than this is flagged (sites publish every minute).
STALE_AFTER_S = 600.0
#: Chain flags listed per batch on the overview (the batch page lists them all).
_FLAGS_SHOWN = 3

_STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:left}
.bad{color:#b00;font-weight:bold}.warn{color:#a60}.ok{color:#080}
.attention{background:#fff3f0}svg{background:#fafafa;border:1px solid #ddd;margin:4px}"""
_ATTENTION_STATES = {"Held", "Holding", "Stopped", "Aborted", "Stopping", "Aborting"}
PV_LABELS = {
    "temperature_c": "temperature °C",
    "do_pct": "DO % air sat.",
    "ph": "pH",
    "viable_cells_per_ml": "viable cells /mL",
    "volume_ml": "volume mL",
}


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) >= 1e4 else f"{value:.2f}"
    return "-" if value is None else escape(str(value))


def _chain_flags(store: Store) -> dict[tuple[str, str], list[str]]:
    """Per batch, one line per kind of chain problem: head problems first, then events.

    A rewritten journal arrives as hundreds of events that differ from the stored
    ones; the control room needs "events 40-1155 differ", not 1,116 lines.
    """
    by_reason: dict[tuple[str, str], dict[str, list[int]]] = {}
    for site, batch, seq, reason in store.query(
        "SELECT site, batch, seq, reason FROM chain_flags ORDER BY seq"
    ):
        by_reason.setdefault((site, batch), {}).setdefault(reason, []).append(int(seq))
    flags: dict[tuple[str, str], list[str]] = {}
    for key, reasons in by_reason.items():
        lines = []
        for reason, seqs in reasons.items():
            head = reason.startswith("bad signature") or "anchored head" in reason
            where = f"event {seqs[0]}" if len(seqs) == 1 else f"events {seqs[0]}-{seqs[-1]}"
            count = f" ({len(seqs)} events)" if len(seqs) > 1 else ""
            lines.append((0 if head else 1, seqs[0], f"{where}{count}: {reason}"))
        flags[key] = [text for *_, text in sorted(lines)]
    return flags


def data_age(seconds: float) -> str:
    """How old a batch's latest data is, as a supervisor reads it."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 48 * 3600 else f"{seconds / 86400:.1f} days"


def overview_rows(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """Every site's batches with what needs attention: the dashboard's (and the API's) data.

    A batch still running whose data stopped arriving for ``STALE_AFTER_S`` is flagged:
    its last values are not its present ones (a journal that stopped moving, a forwarder
    that died while the site is still connected)."""
    now = wall_seconds() if now is None else now
    flags = _chain_flags(store)
    suspended = {
        row[0]: (row[1], row[2])
        for row in store.query("SELECT site, operator, reason FROM sites WHERE suspended=1")
    }
    heads = {
        (site, batch): {"seq": seq, "signed": bool(sig), "verified": bool(ok), "key_id": kid}
        for site, batch, seq, sig, ok, kid in store.query(
            "SELECT site, batch, seq, signature, verified, key_id FROM heads"
        )
    }
    rows = []
    for site, batch, unit, state_json, online, updated in store.query(
        "SELECT site, batch, unit, state, online, updated_at FROM batches ORDER BY site, batch"
    ):
        state = json.loads(state_json)
        chain = flags.get((site, batch), [])
        reasons = []
        if state.get("state") in _ATTENTION_STATES:
            reasons.append(f"{state['state']}: {state.get('hold_reason') or '-'}")
        if state.get("alarms"):
            reasons.append(
                f"{len(state['alarms'])} alarm(s), last: {state['alarms'][-1]['message']}"
            )
        age = now - float(updated)
        if not online and not state.get("ended"):
            reasons.append("site offline")
        elif not state.get("ended") and age > STALE_AFTER_S:
            reasons.append(f"no data for {data_age(age)}: its journal stopped moving?")
        reasons += [f"chain: {c}" for c in chain[:_FLAGS_SHOWN]]
        if len(chain) > _FLAGS_SHOWN:
            reasons.append(f"chain: and {len(chain) - _FLAGS_SHOWN} more (see the batch page)")
        rows.append(
            {
                "site": site,
                "unit": unit,
                "batch": batch,
                "state": state.get("state"),
                "phase": state.get("phase"),
                "day": state.get("day"),
                "pv": state.get("pv", {}),
                "online": bool(online),
                "seq": state.get("seq"),
                "attention": reasons,
                "chain_ok": not chain,
                "chain_flags": chain,
                "head": heads.get((site, batch)),
                "site_suspended": site in suspended,
                "updated_at": updated,
                "age_s": age,
            }
        )
    return rows


def _head_cell(head: dict[str, Any] | None, seq: Any) -> str:
    """Anchored head: how far the control site holds a chain it checked (and who signed it)."""
    if head is None:
        return "<span class='warn'>none yet</span>"
    of = f" of {seq}" if isinstance(seq, int) and seq != head["seq"] else ""
    if head["verified"]:
        return (
            f"<span class='ok' title='signed with key {escape(str(head['key_id']))}, verified'>"
            f"event {head['seq']}{of}, signed ✓</span>"
        )
    what = "signed, no registered key" if head["signed"] else "unsigned"
    return f"<span class='warn'>event {head['seq']}{of}, {what}</span>"


def overview_live(store: Store) -> str:
    """The overview's changing part: counts, suspended sites, batches, quarantined messages."""
    rows = overview_rows(store)
    sites = store.query("SELECT site, suspended, operator, reason FROM sites ORDER BY site")
    head = "".join(f"<th>{escape(label)}</th>" for label in PV_LABELS.values())
    lines = []
    for r in rows:
        cls = " class='attention'" if r["attention"] else ""
        link = f"/batch/{escape(r['site'])}/{escape(r['batch'])}"
        pvs = "".join(f"<td>{_fmt(r['pv'].get(k))}</td>" for k in PV_LABELS)
        attention = "<br>".join(escape(a) for a in r["attention"]) or "<span class='ok'>ok</span>"
        lines.append(
            f"<tr{cls} data-site='{escape(r['site'])}' data-batch='{escape(r['batch'])}'>"
            f"<td>{escape(r['site'])}</td><td>{escape(r['unit'])}</td>"
            f"<td><a href='{link}'>{escape(r['batch'])}</a></td>"
            f"<td class='state'>{_fmt(r['state'])}</td><td>{_fmt(r['phase'])}</td>"
            f"<td>{_fmt(r['day'])}</td><td class='age'>{data_age(r['age_s'])}</td>"
            f"{pvs}<td class='head'>{_head_cell(r['head'], r['seq'])}</td>"
            f"<td class='attention-cell'>{attention}</td></tr>"
        )
    suspended = "".join(
        f"<li class='bad'>site {escape(s)} suspended by {escape(op)}: {escape(why)}</li>"
        for s, flag, op, why in sites
        if flag
    )
    return (
        f"<p id='counts'>{len(rows)} batches at {len({r['site'] for r in rows})} sites — "
        f"as of {wall_now().strftime('%Y-%m-%d %H:%M:%S UTC')}</p>"
        f"<ul id='suspended'>{suspended}</ul>"
        f"<table id='batches'><tr><th>site</th><th>unit</th><th>batch</th><th>state</th>"
        f"<th>phase</th><th>day</th><th>data age</th>{head}<th>anchored head</th>"
        "<th>needs attention</th></tr>"
        f"{''.join(lines)}</table>{quarantine_html(store)}"
    )


def overview_page(store: Store, refresh_s: float = 2.0) -> str:
    token = overview_token(store)  # before rendering: a change in between shows at next poll
    live = live_region("/api/overview", token, refresh_s, overview_live(store))
    return _page("poc-twin control site", f"<h1>poc-twin control site</h1>{live}")


def svg_trend(points: list[tuple[float, float]], label: str, width: int = 640) -> str:
    """One process value over batch days as an inline SVG polyline."""
    height, pad = 160, 36
    if not points:
        return f"<p>{escape(label)}: no readings yet</p>"
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) or 1.0
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 1, y1 + 1
    sx = (width - 2 * pad) / ((x1 - x0) or 1.0)
    sy = (height - 2 * pad) / (y1 - y0)
    path = " ".join(
        f"{pad + (x - x0) * sx:.1f},{height - pad - (y - y0) * sy:.1f}" for x, y in points
    )
    return (
        f"<svg class='trend' data-pv='{escape(label)}' width='{width}' height='{height}' "
        f"xmlns='http://www.w3.org/2000/svg'><text x='{pad}' y='16'>{escape(label)}</text>"
        f"<text x='2' y='{pad + 4}' font-size='10'>{_fmt(y1)}</text>"
        f"<text x='2' y='{height - pad}' font-size='10'>{_fmt(y0)}</text>"
        f"<text x='{width - pad - 40}' y='{height - 8}' font-size='10'>day {x1:.2f}</text>"
        f"<polyline fill='none' stroke='#06c' stroke-width='1.5' points='{path}'/></svg>"
    )


def _trends(store: Store, site: str, batch: str, max_points: int = 400) -> dict[str, list]:
    rows = store.query(
        "SELECT batch_time, data FROM events WHERE site=? AND batch=? AND kind='reading' "
        "ORDER BY seq",
        (site, batch),
    )
    series: dict[str, list[tuple[float, float]]] = {k: [] for k in PV_LABELS}
    step = max(1, len(rows) // (max_points * 2))
    for batch_time, data in rows[::step]:
        values = json.loads(data).get("values", {})
        if "do_pct" not in values:
            continue
        for key in PV_LABELS:
            if isinstance(values.get(key), int | float):
                series[key].append((batch_time / 86400.0, float(values[key])))
    return series


def batch_live(store: Store, site: str, batch: str) -> str | None:
    """One batch's changing part: state line, what needs attention, head, trends, events."""
    found = [r for r in overview_rows(store) if r["site"] == site and r["batch"] == batch]
    if not found:
        return None
    r = found[0]
    trends = _trends(store, site, batch)
    svgs = "".join(svg_trend(trends[k], PV_LABELS[k]) for k in PV_LABELS)
    notable = store.query(
        "SELECT seq, batch_time, kind, source, data FROM events WHERE site=? AND batch=? AND "
        "kind IN ('alarm','command') ORDER BY seq",
        (site, batch),
    )
    events = "".join(
        f"<tr><td>{seq}</td><td>{bt / 86400:.3f}</td><td>{escape(kind)}</td>"
        f"<td>{escape(src)}</td><td>{escape(data)}</td></tr>"
        for seq, bt, kind, src, data in notable
    )
    flags = r["chain_flags"]
    shown = [a for a in r["attention"] if not a.startswith("chain: ")]
    shown += [f"chain: {c}" for c in flags[:50]]
    if len(flags) > 50:
        shown.append(f"chain: and {len(flags) - 50} more")
    attention = "".join(f"<li class='bad'>{escape(a)}</li>" for a in shown)
    return (
        f"<p>site {escape(site)}, unit {escape(r['unit'])} — state <b id='state'>"
        f"{_fmt(r['state'])}</b>, phase {_fmt(r['phase'])}, day {_fmt(r['day'])}, "
        f"event <span id='seq'>{_fmt(r['seq'])}</span>, "
        f"{'online' if r['online'] else 'offline'}</p>"
        f"<p id='head'>anchored head: {_head_cell(r['head'], r['seq'])}</p>"
        f"<ul id='attention'>{attention}</ul><h2>Trends</h2>{svgs}"
        f"<h2>Alarms and operator commands</h2><table id='notable'>{events}</table>"
    )


def batch_page(store: Store, site: str, batch: str, refresh_s: float = 2.0) -> str | None:
    token = batch_token(store, site, batch)
    inner = batch_live(store, site, batch)
    if inner is None:
        return None
    row = next((r for r in overview_rows(store) if r["site"] == site and r["batch"] == batch), {})
    if row.get("state") in _FINAL_STATES:  # only the acts that make sense in its state
        form = f"<p id='no-hold'>The batch has ended {escape(str(row['state']))}: no hold.</p>"
    else:
        form = (
            f"<form method='post' action='/batch/{escape(site)}/{escape(batch)}/hold'>"
            "<input name='reason' placeholder='reason' required> "
            "<button>request hold</button></form>"
        )
    api = f"/api/batch/{site}/{batch}"
    body = (
        f"<p><a href='/'>all sites</a></p><h1>{escape(batch)}</h1>{form}"
        f"{live_region(api, token, refresh_s, inner)}"
    )
    return _page(f"{batch} at {site}", body)
