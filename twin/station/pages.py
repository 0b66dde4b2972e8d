"""The operator station's HTML: every value escaped, every form with its CSRF token.

Pages are plain server-rendered HTML; a few lines of script refresh the live part
of a page every ``REFRESH_S`` and open the signature dialog. Nothing a batch or a
user wrote reaches the page unescaped (a reason, a comment, an alarm message, a
product name are text, whatever characters they hold).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any

from twin.access.roles import Act, Role, may
from twin.clock import wall_now
from twin.engine.lots import MATERIALS
from twin.engine.states import TABLE, Command
from twin.ensemble.html import forecast_panel
from twin.report.svg import trend_svg
from twin.station.board import TREND_PVS, BatchBoard
from twin.station.sessions import Session

__all__ = ["REFRESH_S", "batch_live", "batch_page", "login_page", "overview_live", "overview_page"]

REFRESH_S = 2.0
#: Names an operator reads, for the journal's process-value keys.
LABELS = {
    "temperature_c": "Temperature",
    "do_pct": "Dissolved oxygen",
    "ph": "pH",
    "viable_cells_per_ml": "Viable cell density",
    "volume_ml": "Volume",
}
#: Commands that act at a level below the procedure too.
LEVELLED = {"hold", "restart", "stop", "abort"}
#: The levels below the procedure, as its elements are named ("unit:expansion_bioreactor").
LEVELLED_AT = ("unit", "operation", "phase")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#222}
header{background:#1f3a5f;color:#fff;padding:.5em 1em;display:flex;gap:1em;align-items:center}
header a{color:#fff}header form{margin-left:auto}
main{padding:1em}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
.flash-ok{background:#e3f5e1;padding:.5em}.flash-error{background:#fbe3e1;padding:.5em}
.state{font-size:1.4em;font-weight:bold}.critical{color:#b00020;font-weight:bold}
.unack{background:#fff4ce}.stale{color:#b00020}
section{margin:1em 0;padding:.5em 1em;border:1px solid #ddd}
button{padding:.4em 1em;margin:.2em}dialog{min-width:28em}
label{display:block;margin:.4em 0}input[type=text],input[type=password],textarea{width:100%}
"""

_SCRIPT = """
function refresh(url, id){
  const box = document.getElementById(id);
  if(!box) return;
  setInterval(async () => {
    const r = await fetch(url, {credentials: 'same-origin'});
    if(r.redirected || !r.ok){ location.reload(); return; }
    box.innerHTML = (await r.json()).html;
  }, REFRESH_MS);
}
function signDialog(button){
  const d = document.getElementById('sign');
  const f = d.querySelector('form');
  f.action = button.dataset.action;
  d.querySelector('.what').textContent = button.dataset.what;
  f.elements['command'].value = button.dataset.command || '';
  f.elements['alarm'].value = button.dataset.alarm || '';
  // a button for one element (restart a held unit) signs at that element's level only
  f.elements['level'].value = button.dataset.level || 'procedure';
  f.elements['level'].parentElement.hidden = !button.dataset.levelled;
  f.elements['reason'].value = '';
  f.elements['password'].value = '';
  d.showModal();
  f.elements['reason'].focus();
}
document.addEventListener('click', e => {
  const b = e.target.closest('button[data-action]');
  if(b){ e.preventDefault(); signDialog(b); }
});
document.addEventListener('keydown', e => {
  // a barcode scanner types the code and Enter: go on to the next field, do not submit
  if(e.key === 'Enter' && e.target.dataset.next){
    e.preventDefault();
    document.getElementById(e.target.dataset.next).focus();
  }
});
""".replace("REFRESH_MS", str(int(REFRESH_S * 1000)))


def _page(title: str, body: str, session: Session | None) -> str:
    who = ""
    if session is not None:
        roles = ", ".join(sorted(session.roles)) or "no role"
        who = (
            f"<span>{escape(session.name)} ({escape(session.user)}; {escape(roles)})</span>"
            f'<form method="post" action="/logout">{_csrf(session)}'
            '<button type="submit">Sign out</button></form>'
        )
    flashes = ""
    if session is not None:
        flashes = "".join(
            f'<p class="flash-{escape(kind)}" role="status">{escape(text)}</p>'
            for kind, text in session.flash
        )
        session.flash.clear()
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)} — poc-twin station</title><style>{_STYLE}</style>"
        f"<script>{_SCRIPT}</script></head>"
        f"<body><header><a href='/'>poc-twin station</a>{who}</header>"
        f"<main>{flashes}{body}</main></body></html>"
    )


def _csrf(session: Session) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(session.csrf)}">'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], empty: str = "none") -> str:
    """A table of already-escaped cells."""
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f"<p>{escape(empty)}</p>"
    heads = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><thead><tr>{heads}</tr></thead><tbody>{body}</tbody></table>"


def _num(value: Any) -> str:
    if not isinstance(value, int | float):
        return "–"
    return f"{value:.3g}" if abs(value) >= 1e4 else f"{value:.2f}"


def _age(board: BatchBoard, now: datetime) -> str:
    if board.last_wall is None:
        return "–"
    seconds = max(0.0, (now - board.last_wall).total_seconds())
    text = f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"
    return f'<span class="stale">{text}</span>' if seconds > 120 else text


def login_page(error: str = "", next_url: str = "/") -> str:
    """The sign-in form: the only page without a session."""
    message = f'<p class="flash-error" role="alert">{escape(error)}</p>' if error else ""
    body = (
        f"<h1>Sign in</h1>{message}"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="next" value="{escape(next_url)}">'
        '<label>User id <input type="text" name="user" autocomplete="username" autofocus '
        "required></label>"
        '<label>Password <input type="password" name="password" '
        'autocomplete="current-password" required></label>'
        '<button type="submit">Sign in</button></form>'
    )
    return _page("Sign in", body, None)


# -- the site's batches -----------------------------------------------------------------


def overview_live(boards: Sequence[BatchBoard], running: set[str]) -> str:
    """The table of the site's batches (refreshed in place)."""
    now = wall_now()  # data age against the real wall clock
    rows = []
    for b in sorted(boards, key=lambda b: (b.name not in running, b.name)):
        recipe = b.view.recipe or "–"
        alarms = len(b.unacknowledged)
        rows.append(
            (
                f'<a href="/batch/{escape(b.name)}">{escape(b.name)}</a>',
                escape(recipe),
                f'<span class="state">{escape(b.shown_state)}</span>',
                escape(b.view.phase.split(":", 1)[-1]),
                f"{b.day:.2f}",
                _age(b, now),
                "running" if b.name in running else "ended" if b.ended else "not running",
                f'<span class="critical">{alarms}</span>' if alarms else "0",
            )
        )
    head = ("Batch", "Recipe", "State", "Phase", "Day", "Last data", "Process", "Unacked alarms")
    return _table(head, rows, "no batch journals in this site's runs folder yet")


def overview_page(boards: Sequence[BatchBoard], running: set[str], session: Session) -> str:
    body = (
        "<h1>Batches at this site</h1>"
        f'<div id="live">{overview_live(boards, running)}</div>'
        "<script>refresh('/live', 'live');</script>"
    )
    return _page("Batches", body, session)


# -- one batch ----------------------------------------------------------------------------


#: Commands a person signs at the station (start is ``run``; reset ends the run process).
_SIGNED_COMMANDS = {a.value for a in Act} & {c.value for c in Command}


def _commands_for(state: str, roles: frozenset[Role]) -> list[str]:
    """The commands the state model accepts in ``state`` (STATE_MODEL.md) that ``roles`` may
    sign: a button is offered only where pressing it can work."""
    return [
        c.value
        for c, frm, _ in TABLE
        if frm.label == state and c.value in _SIGNED_COMMANDS and may(roles, Act(c.value))
    ]


def _held_below(board: BatchBoard) -> tuple[str, str, str] | None:
    """(level, element, state) of the highest element below a Running procedure that is not
    running (held, holding, restarting): the batch takes restart, stop and abort below the
    procedure only there, at that element's own level."""
    if board.state != "Running":
        return None
    for element, (state, _) in board.view.below_in_order():
        level = element.split(":", 1)[0]
        if level in LEVELLED_AT:
            return level, element, state
    return None


def _levelled_buttons(board: BatchBoard, roles: frozenset[Role]) -> list[str]:
    """Restart (and, for a supervisor, stop and abort) of the element held below the
    procedure, at its level: a hold there is lifted there, not at the procedure."""
    held = _held_below(board)
    if held is None:
        return []
    level, element, state = held
    return [
        _sign_button(
            f"{command.capitalize()} {element}",
            f"/batch/{board.name}/command",
            command=command,
            level=level,
        )
        for command in _commands_for(state, roles)
        if command in LEVELLED - {"hold"}
    ]


def _sign_button(what: str, action: str, **data: str) -> str:
    attrs = "".join(f' data-{k}="{escape(v)}"' for k, v in data.items())
    return (
        f'<button type="button" data-action="{escape(action)}" '
        f'data-what="{escape(what)}"{attrs}>{escape(what)}</button>'
    )


def _process_values(board: BatchBoard) -> str:
    rows = []
    for pv, value, unit, setpoint, limit in board.process_values():
        low = _num(limit.low) if limit and limit.low is not None else "–"
        high = _num(limit.high) if limit and limit.high is not None else "–"
        beyond = (
            limit is not None
            and isinstance(value, int | float)
            and (
                (limit.low is not None and value < limit.low)
                or (limit.high is not None and value > limit.high)
            )
        )
        shown = f'<span class="critical">{_num(value)}</span>' if beyond else _num(value)
        rows.append((escape(LABELS.get(pv, pv)), shown, escape(unit), _num(setpoint), low, high))
    head = ("Process value", "Value", "Unit", "Setpoint", "Low alarm", "High alarm")
    return _table(head, rows)


def _alarms(board: BatchBoard, live_process: bool, roles: frozenset[Role]) -> str:
    rows = []
    for a in sorted(board.alarms.values(), key=lambda a: -a.seq):
        level = '<span class="critical">critical</span>' if a.critical else "alarm"
        if a.acknowledged_by:
            ack = f"{escape(a.acknowledged_by)}: {escape(a.comment)}"
        elif (live_process or board.ended) and may(
            roles, Act.ACKNOWLEDGE_CRITICAL if a.critical else Act.ACKNOWLEDGE
        ):
            ack = _sign_button(
                f"Acknowledge alarm {a.seq}",
                f"/batch/{board.name}/ack",
                alarm=str(a.seq),
            )
        else:
            ack = "unacknowledged"
        rows.append(
            (
                str(a.seq),
                f"{a.batch_time / 86400:.2f}",
                escape(a.source),
                escape(a.message),
                level,
                "cleared" if a.cleared else "active",
                ack,
            )
        )
    head = ("Event", "Day", "Source", "Alarm", "Level", "Now", "Acknowledgement")
    return _table(head, rows, "no alarms")


def _trends(board: BatchBoard) -> str:
    end = board.view.batch_time
    alarms = [(a.batch_time, a.message) for a in board.alarms.values()]
    parts = []
    for pv in TREND_PVS:
        points = board.trends.get(pv, [])
        if not points:
            continue
        unit = dict((p, u) for p, _, u, _, _ in board.process_values()).get(pv, "")
        parts.append(
            trend_svg(
                LABELS.get(pv, pv), unit, points, [], end_time=end, holds=board.holds, alarms=alarms
            )
        )
    return "".join(parts) or "<p>no readings yet</p>"


def batch_live(board: BatchBoard, running: bool, roles: frozenset[Role]) -> str:
    """The part of a batch page that follows the journal (refreshed in place)."""
    now = wall_now()  # data age against the real wall clock
    status = "running" if running else "ended" if board.ended else "not running (no process)"
    commands = ""
    if running:
        buttons = [
            _sign_button(
                command.capitalize(),
                f"/batch/{board.name}/command",
                command=command,
                **({"levelled": "1"} if command in LEVELLED else {}),
            )
            for command in _commands_for(board.state, roles)
        ]
        buttons += _levelled_buttons(board, roles)
        commands = "<p>" + "".join(buttons) + "</p>" if buttons else ""
    held = ""
    view = board.view
    if view.state in ("Holding", "Held") and (view.held_by or view.hold_reason):
        # Who held it and why, where the operator at the bag reads it (not only in the record)
        held = (
            f'<p id="held">Held by {escape(view.held_by or "?")}: '
            f"{escape(view.hold_reason or '(no reason given)')}</p>"
        )
    scan = ""
    if board.scan_wanted:
        scan = '<p class="critical" role="alert">The batch waits for the identity scan.</p>'
    elif board.lot_wanted:
        scan = (
            '<p class="critical" role="alert" id="lot-wanted">The batch waits for a scan of '
            f"the {escape(board.lot_wanted)} container.</p>"
        )
    return (
        f'<p><span class="state" id="state">{escape(board.shown_state)}</span> — '
        f"phase {escape(board.view.phase.split(':', 1)[-1])}, day {board.day:.2f}, "
        f"last data {_age(board, now)}, process {status}</p>{held}{scan}{commands}"
        f"<h2>Process values</h2>{_process_values(board)}"
        f"<h2>Alarms</h2>{_alarms(board, running, roles)}"
        f"<h2>Forecast</h2>{forecast_panel(board.forecast)}"
        f"<h2>Trends</h2>{_trends(board)}"
    )


def _sign_dialog(session: Session) -> str:
    """One dialog for every signed button: the act, a reason or comment, the password."""
    levels = "".join(
        f'<option value="{lvl}">{lvl}</option>'
        for lvl in ("procedure", "unit", "operation", "phase")
    )
    return (
        '<dialog id="sign"><form method="post">'
        f"{_csrf(session)}"
        '<h2>Sign: <span class="what"></span></h2>'
        f"<p>Signing as {escape(session.name)} ({escape(session.user)}).</p>"
        '<input type="hidden" name="command"><input type="hidden" name="alarm">'
        f'<label>Level <select name="level">{levels}</select></label>'
        '<label>Reason or comment <input type="text" name="reason" required></label>'
        '<label>Password <input type="password" name="password" '
        'autocomplete="current-password" required></label>'
        '<button type="submit">Sign</button>'
        '<button type="button" onclick="this.closest(\'dialog\').close()">Cancel</button>'
        "</form></dialog>"
    )


def _scan_form(board: BatchBoard, session: Session) -> str:
    return (
        "<section><h2>Identity scan</h2>"
        f'<form method="post" action="/batch/{escape(board.name)}/identity">{_csrf(session)}'
        '<label>Patient id (wristband) <input type="text" id="scan-patient" name="patient_id" '
        'data-next="scan-bag" autocomplete="off" required></label>'
        '<label>Bag id (label) <input type="text" id="scan-bag" name="bag_id" '
        'data-next="scan-password" autocomplete="off" required></label>'
        '<label>Meaning <input type="text" name="reason" '
        'value="chain of identity verified at the bedside" required></label>'
        '<label>Password <input type="password" id="scan-password" name="password" '
        'autocomplete="current-password" required></label>'
        '<button type="submit">Sign the scan</button></form></section>'
    )


def _lot_form(board: BatchBoard, session: Session) -> str:
    """Scan a material container: the label's GS1 code (a scanner types it), or lot and
    expiry keyed in; the batch checks it against the addition waiting for it."""
    scans = _table(
        ("Material", "Lot", "Expiry", "By", "Verdict"),
        (
            (
                escape(str(s.get("material", ""))),
                escape(str(s.get("lot", ""))),
                escape(str(s.get("expiry") or "")),
                escape(str(s.get("operator", ""))),
                "verified" if s.get("accepted") else escape(f"refused: {s.get('refused', '')}"),
            )
            for s in board.lot_scans
        ),
        "no container scanned yet",
    )
    options = "".join(
        f'<option value="{m}"{" selected" if m == board.lot_wanted else ""}>{m}</option>'
        for m in MATERIALS
    )
    return (
        f"<section><h2>Material scan</h2>{scans}"
        f'<form method="post" action="/batch/{escape(board.name)}/lot">{_csrf(session)}'
        f'<label>Material <select name="material">{options}</select></label>'
        '<label>Container label (GS1) <input type="text" id="lot-gs1" name="gs1" '
        'data-next="lot-password" autocomplete="off"></label>'
        '<label>or lot <input type="text" name="lot" autocomplete="off"></label>'
        '<label>expiry <input type="date" name="expiry"></label>'
        '<label>Meaning <input type="text" name="reason" '
        'value="material container verified at the bedside" required></label>'
        '<label>Password <input type="password" id="lot-password" name="password" '
        'autocomplete="current-password" required></label>'
        '<button type="submit">Sign the scan</button></form></section>'
    )


def _qc_form(board: BatchBoard, session: Session) -> str:
    done = _table(
        ("Test", "Value", "Criterion", "Verdict", "Entered by"),
        (
            (
                escape(str(q.get("name", ""))),
                f"{escape(str(q.get('value', '')))} {escape(str(q.get('unit', '')))}",
                escape(str(q.get("criterion", ""))),
                escape(str(q.get("verdict", ""))),
                escape(str(q.get("operator", ""))),
            )
            for q in board.qc
        ),
        "no QC results yet",
    )
    return (
        f"<section><h2>QC results</h2>{done}"
        f'<form method="post" action="/batch/{escape(board.name)}/qc">{_csrf(session)}'
        "<label>Results, one per line (e.g. <code>cd3=92.5</code>; tests: viability, car, "
        'cd3, endotoxin, vcn) <textarea name="results" rows="4" required></textarea></label>'
        '<label>QC lab report number <input type="text" name="lab_ref"></label>'
        '<label>Meaning <input type="text" name="reason" value="QC lab release testing" '
        "required></label>"
        '<label>Password <input type="password" name="password" required></label>'
        '<button type="submit">Sign and enter</button></form></section>'
    )


def _review_form(board: BatchBoard, session: Session) -> str:
    signed = _table(
        ("Meaning", "By", "Comment", "Events signed"),
        (
            (
                escape(str(s.get("meaning", ""))),
                escape(str(s.get("user", ""))),
                escape(str(s.get("comment", ""))),
                escape(str(s.get("record_events", ""))),
            )
            for s in board.signatures
        ),
        "not reviewed yet",
    )
    return (
        f"<section><h2>Review and approval of the batch record</h2>"
        f'<p><a href="/batch/{escape(board.name)}/record" target="_blank">Open the batch record'
        f"</a></p>{signed}"
        f'<form method="post" action="/batch/{escape(board.name)}/review">{_csrf(session)}'
        '<label>Comment <input type="text" name="comment" required></label>'
        '<label><input type="checkbox" name="approve" value="1"> Approve the record '
        "(else: reviewed)</label>"
        '<label>Password <input type="password" name="password" required></label>'
        '<button type="submit">Sign the record</button></form></section>'
    )


def batch_page(board: BatchBoard, running: bool, session: Session) -> str:
    """A batch: live part, the signature dialog, and the forms its state calls for."""
    name = escape(board.name)
    roles = session.roles
    forms = _scan_form(board, session) if running and may(roles, Act.CONFIRM_IDENTITY) else ""
    if running and may(roles, Act.SCAN_LOT):
        forms += _lot_form(board, session)
    if board.ended and not running:
        if may(roles, Act.QC_RESULT):
            forms += _qc_form(board, session)
        if may(roles, Act.REVIEW) or may(roles, Act.APPROVE):
            forms += _review_form(board, session)
    body = (
        f"<h1>Batch {name}</h1><p>Recipe {escape(board.view.recipe)}</p>"
        f'<div id="live">{batch_live(board, running, roles)}</div>'
        f"{forms}{_sign_dialog(session)}"
        f"<script>refresh('/batch/{name}/live', 'live');</script>"
    )
    return _page(f"Batch {board.name}", body, session)
