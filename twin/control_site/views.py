"""The overview: every registered site and every batch, what needs attention first.

Server-rendered HTML (:mod:`.pages` has the shell); a small inline script keeps it
current (:mod:`.live`). The changing part is rendered by one function, used for the
first view and for every update, with the same sorting and filters (query
parameters, so a filtered view can be bookmarked). The batch page is
:mod:`.batch_views`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from twin.clock import wall_now, wall_seconds
from twin.control_site.live import live_region, overview_token
from twin.control_site.pages import act_button, fmt, page, sign_dialog, table
from twin.control_site.plans import Plans, overrun
from twin.control_site.quarantine import quarantine_html
from twin.control_site.store import PROCESS_ENDED, Store
from twin.control_site.supervision import held_below
from twin.station.sessions import Session

__all__ = [
    "STALE_AFTER_S",
    "OverviewQuery",
    "head_cell",
    "overview_live",
    "overview_page",
    "overview_rows",
    "phase_name",
    "requests_html",
    "site_rows",
]

#: Plans parsed once per batch, for callers that bring no cache of their own.
DEFAULT_PLANS = Plans()
#: A running batch whose data is older than this is flagged (sites publish every minute).
STALE_AFTER_S = 600.0
#: Chain flags listed per batch on the overview (the batch page lists them all).
_FLAGS_SHOWN = 3

#: Procedure states in which the batch is not running as planned: someone must act.
_ATTENTION_STATES = {
    "Held",
    "Holding",
    "Stopped",
    "Aborted",
    "Stopping",
    "Aborting",
    "Paused",
    "Pausing",
}
PV_LABELS = {
    "temperature_c": "temperature °C",
    "do_pct": "DO % air sat.",
    "ph": "pH",
    "viable_cells_per_ml": "viable cells /mL",
    "volume_ml": "volume mL",
}


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


def overview_rows(
    store: Store, now: float | None = None, plans: Plans | None = None
) -> list[dict[str, Any]]:
    """Every site's batches with what needs attention: the dashboard's (and the API's) data.

    A batch still running whose data stopped arriving for ``STALE_AFTER_S`` is flagged:
    its last values are not its present ones (a journal that stopped moving, a forwarder
    that died while the site is still connected). So is one whose batch time ran past
    the longest its recipe plans (:mod:`.plans`): stuck, or held for days."""
    now = wall_seconds() if now is None else now
    planned = (plans or DEFAULT_PLANS).all(store)
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
    for site, batch, unit, state_json, online, updated, offline_why in store.query(
        "SELECT site, batch, unit, state, online, updated_at, offline_why FROM batches "
        "ORDER BY site, batch"
    ):
        state = json.loads(state_json)
        chain = flags.get((site, batch), [])
        reasons = []
        procedure = state.get("state")
        # As the batch words it: a hold below the procedure, a scan awaited (a site that
        # sends no status yet: the procedure's state).
        status = state.get("status") or procedure
        why = state.get("status_reason") or state.get("hold_reason") or "-"
        if procedure in _ATTENTION_STATES or held_below(status):
            reasons.append(f"{status}: {why}")
        elif "(waiting for " in str(status):
            reasons.append(f"{status}: a person at the site must scan it")
        alarms = _alarm_counts(state)
        if alarms is not None:
            reasons.append(alarms)
        age = now - float(updated)
        if not online and not state.get("ended") and offline_why == PROCESS_ENDED:
            # The site is there; the batch's own process died (its forwarder said so as it
            # left): somebody at the site must bring the batch back.
            reasons.append("its batch process died at the site: poc-twin resume brings it back")
        elif not online and not state.get("ended"):
            reasons.append("site offline")
        elif not state.get("ended") and age > STALE_AFTER_S:
            reasons.append(f"no data for {data_age(age)}: its journal stopped moving?")
        plan = planned.get((site, batch))
        planned_h = plan.planned_h if plan is not None else None
        batch_time = _batch_time(state)
        late = not state.get("ended") and overrun(batch_time, planned_h)
        if late and planned_h is not None:
            reasons.append(
                f"day {batch_time / 86400:.1f} of a recipe planned for at most "
                f"{planned_h / 24:.1f} days: past its recipe"
            )
        reasons += [f"chain: {c}" for c in chain[:_FLAGS_SHOWN]]
        if len(chain) > _FLAGS_SHOWN:
            reasons.append(f"chain: and {len(chain) - _FLAGS_SHOWN} more (see the batch page)")
        rows.append(
            {
                "site": site,
                "unit": unit,
                "batch": batch,
                "state": status,
                "procedure_state": procedure,
                "phase": state.get("phase"),
                "day": state.get("day", round(batch_time / 86400, 3) if batch_time else None),
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
                "ended": bool(state.get("ended")),
                "alarms_raised": state.get("alarms_raised", len(state.get("alarms") or [])),
                "alarms_unacknowledged": state.get("alarms_unacknowledged"),
                "forecast": state.get("forecast"),
                "recipe": plan.recipe if plan is not None else state.get("recipe"),
                "planned_days": None if planned_h is None else round(planned_h / 24, 3),
                "past_recipe": late,
            }
        )
    return rows


def _alarm_counts(state: dict[str, Any]) -> str | None:
    """The alarms that need someone: those not acknowledged, of all the batch raised (the
    message lists only the latest 20); None when none waits. A site that sends no counts
    yet: the alarms its message lists."""
    listed = state.get("alarms") or []
    waiting = state.get("alarms_unacknowledged")
    if not isinstance(waiting, int):
        return f"{len(listed)} alarm(s), last: {listed[-1]['message']}" if listed else None
    if waiting == 0:
        return None
    raised = state.get("alarms_raised")
    last = f", last: {listed[-1]['message']}" if listed else ""
    return f"{waiting} alarm(s) not acknowledged of {raised} raised{last}"


def _batch_time(state: dict[str, Any]) -> float:
    """Seconds of batch time in a state message (``day`` for a site that sends no more)."""
    value = state.get("batch_time")
    if isinstance(value, int | float):
        return float(value)
    day = state.get("day")
    return float(day) * 86400 if isinstance(day, int | float) else 0.0


def head_cell(head: dict[str, Any] | None, seq: Any) -> str:
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


_STATE_FILTERS = {
    "all": "every batch",
    "active": "not ended",
    "attention": "needs attention",
    "held": "held or holding",
    "ended": "ended",
}
_SORTS = ("attention", "site", "batch", "state", "day", "age", "recipe")


@dataclass(frozen=True)
class OverviewQuery:
    """Which batches the overview lists and in what order (``?site=&state=&sort=&order=``)."""

    site: str = ""
    state: str = "all"
    sort: str = "attention"
    descending: bool = False

    @classmethod
    def parse(cls, query: Any) -> OverviewQuery:
        """From a request's query; anything unknown falls back to the default."""
        state = str(query.get("state", "all"))
        sort = str(query.get("sort", "attention"))
        return cls(
            site=str(query.get("site", ""))[:100],
            state=state if state in _STATE_FILTERS else "all",
            sort=sort if sort in _SORTS else "attention",
            descending=query.get("order") == "desc",
        )

    def as_query(self, **changes: Any) -> str:
        """This view's query string (with ``changes``), for links and the live region."""
        values = {"site": self.site, "state": self.state, "sort": self.sort}
        values["order"] = "desc" if self.descending else "asc"
        values.update(changes)
        kept = {k: v for k, v in values.items() if v and (k, v) not in _DEFAULTS}
        return f"?{urlencode(kept)}" if kept else ""

    def keep(self, row: dict[str, Any]) -> bool:
        if self.site and row["site"] != self.site:
            return False
        state = row["state"]
        return {
            "all": True,
            "active": not row["ended"],
            "attention": bool(row["attention"]),
            "held": row["procedure_state"] in ("Held", "Holding") or bool(held_below(state)),
            "ended": row["ended"],
        }[self.state]

    def order(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        keys = {
            "attention": lambda r: (not r["attention"], r["site"], r["batch"]),
            "site": lambda r: (r["site"], r["batch"]),
            "batch": lambda r: (r["batch"], r["site"]),
            "state": lambda r: (str(r["state"]), r["site"], r["batch"]),
            "day": lambda r: (r["day"] if isinstance(r["day"], int | float) else -1.0,),
            "age": lambda r: (r["age_s"],),
            "recipe": lambda r: (str(r["recipe"]), r["site"], r["batch"]),
        }
        return sorted(rows, key=keys[self.sort], reverse=self.descending)


_DEFAULTS = {("state", "all"), ("sort", "attention"), ("order", "asc")}


def site_rows(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every site the control site knows: a registered key, a batch, or a suspension.

    A site with nothing running is listed too: a registered site that went quiet is
    something to see, not an absence nobody notices."""
    keys = store.anchoring.keys
    registered = set(keys.sites()) if keys is not None else set()
    suspensions = {
        site: (bool(flag), op, why, at)
        for site, flag, op, why, at in store.query(
            "SELECT site, suspended, operator, reason, at FROM sites"
        )
    }
    names = registered | set(suspensions) | {r["site"] for r in rows}
    out = []
    for site in sorted(names):
        batches = [r for r in rows if r["site"] == site]
        suspended, who, why, at = suspensions.get(site, (False, "", "", None))
        out.append(
            {
                "site": site,
                "registered": site in registered,
                "suspended": suspended,
                "suspended_by": who if suspended else None,
                "suspension_reason": why if suspended else None,
                "suspended_at": at if suspended else None,
                "batches": len(batches),
                "active": sum(1 for r in batches if not r["ended"]),
                "last_age_s": min((r["age_s"] for r in batches), default=None),
            }
        )
    return out


def _sites_html(sites: list[dict[str, Any]]) -> str:
    """One row per site with its one sensible act: suspend an active site, reinstate a
    suspended one."""
    lines = []
    for s in sorted(sites, key=lambda s: (not s["suspended"], s["site"])):
        name = escape(s["site"])
        if s["suspended"]:
            status = (
                f"<span class='bad'>suspended by {escape(s['suspended_by'])}: "
                f"{escape(s['suspension_reason'])}</span>"
            )
            act = act_button(
                "Reinstate",
                f"/site/{s['site']}/reinstate",
                f"reinstate site {s['site']}",
                "The site may start batches again.",
            )
        else:
            status = "<span class='ok'>active</span>"
            act = act_button(
                "Suspend",
                f"/site/{s['site']}/suspend",
                f"suspend site {s['site']}",
                "The site may start no new batch until reinstated; running batches go on.",
                danger=True,
            )
        if s["batches"] == 0:
            batches, cls = "<span class='muted'>idle: no batch</span>", " class='idle'"
        else:
            batches, cls = f"{s['active']} running, {s['batches']} in all", ""
        age = "-" if s["last_age_s"] is None else data_age(s["last_age_s"])
        key = "<span class='ok'>registered</span>" if s["registered"] else "<span>none</span>"
        link = f"<a href='/{_query(site=s['site'])}'>{name}</a>"
        cells = (link, status, batches, age, key, act)
        lines.append((cells, cls, name))
    head = "".join(
        f"<th>{h}</th>" for h in ("site", "status", "batches", "last data", "site key", "act")
    )
    body = "".join(
        f"<tr{cls} data-site='{name}'>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
        for cells, cls, name in lines
    )
    return (
        f"<h2>Sites</h2><table id='sites'><thead><tr>{head}</tr></thead><tbody>{body}"
        "</tbody></table>"
    )


def phase_name(path: Any) -> Any:
    """``unit/operation/n:phase`` as a supervisor reads it: ``operation: phase``."""
    parts = str(path).split("/")
    if len(parts) < 3:
        return path
    return f"{parts[1]}: {parts[2].split(':', 1)[-1]}"


def _query(**values: str) -> str:
    return f"?{urlencode(values)}"


def _sort_head(label: str, key: str | None, q: OverviewQuery) -> str:
    if key is None:
        return f"<th>{escape(label)}</th>"
    arrow = ""
    descending = False
    if q.sort == key:
        arrow = " ▼" if q.descending else " ▲"
        descending = not q.descending
    href = escape(q.as_query(sort=key, order="desc" if descending else "asc") or "?")
    return f"<th><a href='/{href}' data-sort='{key}'>{escape(label)}{arrow}</a></th>"


def _filters(q: OverviewQuery, sites: list[str]) -> str:
    """A GET form: bookmarkable, and it works without script."""
    site_options = "".join(
        f"<option value='{escape(s)}'{' selected' if s == q.site else ''}>"
        f"{escape(s) or 'every site'}</option>"
        for s in ["", *sites]
    )
    state_options = "".join(
        f"<option value='{k}'{' selected' if k == q.state else ''}>{escape(v)}</option>"
        for k, v in _STATE_FILTERS.items()
    )
    return (
        "<form class='filters' method='get' action='/'>"
        f"<label>Site <select name='site'>{site_options}</select></label>"
        f"<label>Batches <select name='state'>{state_options}</select></label>"
        f"<input type='hidden' name='sort' value='{escape(q.sort)}'>"
        f"<input type='hidden' name='order' value='{'desc' if q.descending else 'asc'}'>"
        "<button type='submit'>Show</button> <a href='/'>clear</a></form>"
    )


def _day_cell(r: dict[str, Any]) -> str:
    day = fmt(r["day"])
    if r["planned_days"] is None:
        return day
    of = f" of ≤{r['planned_days']:.1f}"
    return f"<span class='bad'>{day}{of}</span>" if r["past_recipe"] else f"{day}{of}"


def requests_html(store: Store, site: str | None = None, batch: str | None = None) -> str:
    """The control site's own audit: who asked a site for what, why, and what came of it."""
    where, params = "", ()
    if site is not None:
        where, params = "WHERE site=?", (site,)
        if batch is not None:
            where, params = "WHERE site=? AND batch=?", (site, batch)
    rows = store.query(
        f"SELECT at, operator, action, site, batch, reason, outcome FROM requests {where} "
        "ORDER BY at DESC LIMIT 20",
        params,
    )
    cells = [
        (
            datetime.fromtimestamp(float(at), UTC).strftime("%Y-%m-%d %H:%M:%S"),
            escape(who),
            escape(action),
            escape(s),
            escape(b),
            escape(why),
            f"<span class='ok'>{escape(out)}</span>"
            if out == "sent"
            else f"<span class='bad'>{escape(out)}</span>",
        )
        for at, who, action, s, b, why, out in rows
    ]
    head = ("when (UTC)", "user", "request", "site", "batch", "reason", "outcome")
    return table(head, cells, "requests", "no requests yet")


def overview_live(
    store: Store, query: OverviewQuery | None = None, plans: Plans | None = None
) -> str:
    """The overview's changing part: sites, batches (filtered and sorted), quarantine."""
    q = query or OverviewQuery()
    rows = overview_rows(store, plans=plans)
    sites = site_rows(store, rows)
    shown = q.order([r for r in rows if q.keep(r)])
    columns: list[tuple[str, str | None]] = [
        ("site", "site"),
        ("unit", None),
        ("batch", "batch"),
        ("recipe", "recipe"),
        ("state", "state"),
        ("phase", None),
        ("day", "day"),
        ("data age", "age"),
        *((label, None) for label in PV_LABELS.values()),
        ("anchored head", None),
        ("needs attention", "attention"),
        ("record", None),
    ]
    head = "".join(_sort_head(label, key, q) for label, key in columns)
    lines = []
    for r in shown:
        cls = " class='attention'" if r["attention"] else ""
        link = f"/batch/{escape(r['site'])}/{escape(r['batch'])}"
        pvs = "".join(f"<td>{fmt(r['pv'].get(k))}</td>" for k in PV_LABELS)
        attention = "<br>".join(escape(a) for a in r["attention"]) or "<span class='ok'>ok</span>"
        lines.append(
            f"<tr{cls} data-site='{escape(r['site'])}' data-batch='{escape(r['batch'])}'>"
            f"<td>{escape(r['site'])}</td><td>{escape(r['unit'])}</td>"
            f"<td><a href='{link}'>{escape(r['batch'])}</a></td><td>{fmt(r['recipe'])}</td>"
            f"<td class='state'>{fmt(r['state'])}</td><td>{fmt(phase_name(r['phase']))}</td>"
            f"<td class='day nowrap'>{_day_cell(r)}</td><td class='age'>{data_age(r['age_s'])}</td>"
            f"{pvs}<td class='head'>{head_cell(r['head'], r['seq'])}</td>"
            f"<td class='attention-cell'>{attention}</td>"
            f"<td><a class='record' href='{link}/record'>record</a></td></tr>"
        )
    if not lines:
        lines.append(f"<tr><td colspan='{len(columns)}' class='muted'>no batch to show</td></tr>")
    suspended = sum(1 for s in sites if s["suspended"])
    idle = sum(1 for s in sites if s["batches"] == 0)
    counts = (
        f"{len(rows)} batches at {len(sites)} sites ({idle} idle, {suspended} suspended); "
        f"{len(shown)} shown — as of {wall_now().strftime('%Y-%m-%d %H:%M:%S UTC')}"
    )
    return (
        f"<p id='counts'>{counts}</p>{_sites_html(sites)}"
        f"<h2>Batches</h2>{_filters(q, [s['site'] for s in sites])}"
        f"<table id='batches'><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody>"
        f"</table><h2>Requests to sites</h2>{requests_html(store)}{quarantine_html(store)}"
    )


def overview_page(
    store: Store,
    refresh_s: float = 2.0,
    *,
    session: Session | None = None,
    query: OverviewQuery | None = None,
    plans: Plans | None = None,
) -> str:
    q = query or OverviewQuery()
    token = overview_token(store)  # before rendering: a change in between shows at next poll
    live = live_region(
        f"/api/overview{q.as_query()}", token, refresh_s, overview_live(store, q, plans)
    )
    dialog = sign_dialog(session) if session is not None else ""
    return page("poc-twin control site", f"<h1>Sites and batches</h1>{live}{dialog}", session)
