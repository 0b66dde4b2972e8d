"""Render a :class:`BatchRecord` as one self-contained HTML page (inline CSS and SVG only).

Order follows how QA reviews: exceptions first, then identity of the batch,
then the evidence (states, trends, actions, deviations, results, integrity).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from twin.report.record import BatchRecord
from twin.report.svg import trend_svg

__all__ = ["render_html"]

CSS = (
    'body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;'
    "margin:24px;color:#222;max-width:1000px}"
    "h1{font-size:22px;margin:0 0 4px}"
    "h2{font-size:17px;border-bottom:2px solid #1f5fa8;padding-bottom:3px;margin-top:28px}"
    "table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}"
    "th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
    "th{background:#f0f3f7}"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".banner{padding:10px 14px;border-radius:4px;font-weight:600;margin:10px 0}"
    ".ok{background:#e3f4e8;border:1px solid #27ae60}"
    ".bad{background:#fbe3e1;border:1px solid #c0392b}"
    ".critical{color:#a61c10;font-weight:700}"
    ".major{color:#b35900;font-weight:600}"
    ".minor{color:#555}"
    ".pass{color:#1e7b3c;font-weight:700}"
    ".fail{color:#a61c10;font-weight:700}"
    ".pending,.info,.not{color:#666}"
    ".mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}"
    ".legend span{margin-right:16px;font-size:12px}"
    ".sig td{height:34px}"
    "@page{size:A4;margin:12mm 10mm}"
    "@media print{body{margin:0;max-width:none}"
    "h2,h3{break-after:avoid}"
    "thead{display:table-header-group}"
    "tr,svg{break-inside:avoid}"
    "svg.trend{max-width:100%;height:auto}"
    "#approval{break-before:page}}"
)


ACTION_HEAD = (
    "Seq",
    "Batch time",
    "Wall time (UTC)",
    "Who",
    "Action",
    "Meaning",
    "Reason",
    "Outcome",
    "Electronic signature",
)
#: Shown where the journal holds no reason for a state change (journals before 2026-12-06).
NO_REASON = "NO REASON RECORDED"
INTEGRITY_NOTE = (
    "Verification detects any edited, deleted, inserted or reordered event. Signed checkpoints "
    "additionally expose a rewrite of the whole chain by anyone without the site key; a rewrite "
    "by a holder of the key is exposed only against heads anchored at the control site."
)


def bt(seconds: float) -> str:
    """Batch time as day and clock time since start, e.g. ``d2 04:15``."""
    s = round(seconds)
    return f"d{s // 86400} {s % 86400 // 3600:02d}:{s % 3600 // 60:02d}"


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "none") -> str:
    body = "".join(
        "<tr>"
        + "".join(c if isinstance(c, Raw) else f"<td>{escape(str(c))}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    if not body:
        body = f'<tr><td colspan="{len(head)}"><i>{escape(empty)}</i></td></tr>'
    ths = "".join(f"<th>{escape(h)}</th>" for h in head)
    return f"<table><thead><tr>{ths}</tr></thead><tbody>{body}</tbody></table>"


class Raw(str):
    """A table cell already rendered as HTML."""


def _verdict(v: str) -> Raw:
    return Raw(f'<td class="{escape(v.split()[0])}">{escape(v.upper())}</td>')


def _banner(r: BatchRecord) -> str:
    c = r.chain
    if not c.ok:
        return (
            '<div class="banner bad" id="integrity-banner">JOURNAL DOES NOT VERIFY — '
            f"broken at event {c.first_bad_seq} ({escape(c.reason)}). "
            f"This record is not trustworthy beyond event {c.events}.</div>"
        )
    sig = r.signatures
    if sig is not None and not sig.ok:
        return (
            f'<div class="banner bad" id="integrity-banner">SIGNATURE CHECK FAILED at event '
            f"{sig.first_bad_seq}: {escape(sig.reason)}.</div>"
        )
    signed = ""
    if sig is not None and sig.verified:
        signed = f"; site signatures verified through event {sig.signed_through}"
    elif sig is not None and sig.checkpoints:
        signed = f"; {sig.checkpoints} signed checkpoints (signatures not checked: no public key)"
    return (
        f'<div class="banner ok" id="integrity-banner">Journal verified: {c.events} events, '
        f'hash chain intact, head <span class="mono">{c.head[:16]}…</span>{signed}.</div>'
    )


def _approval(h: dict[str, Any]) -> str:
    """Who approved the recipe, as its text states, and whether that was checked: a
    production bench runs only a text whose hash is in the site's register; a development
    bench runs any, so a copy edited after approval would show an approval that never
    covered it (a tester's edited CAR-T recipe read "QA Release 2026-12-06")."""
    stated = f"{h.get('approved_by') or '—'} {h.get('approved_on') or ''}".strip()
    if not h.get("development"):
        return f"{stated} (this text's hash was in the site's register at the start)"
    return (
        f"{stated} as the recipe's text states; a development bench does not check it "
        "against the site's register of approved texts"
    )


def _header(r: BatchRecord) -> str:
    h = r.header
    rows = [
        ("Product", h.get("product")),
        ("Batch id", h.get("batch_id")),
        ("Patient id", h.get("patient_id") or "not recorded in the journal"),
        ("Bag id", h.get("bag_id") or "—"),
        ("Recipe", f"{h.get('recipe_id')} v{h.get('recipe_version')} ({h.get('recipe_status')})"),
        ("Purpose", h.get("purpose") or "product"),
        ("Recipe approval", _approval(h)),
        ("Recipe SHA-256", Raw(f'<td class="mono">{escape(str(h.get("recipe_sha256")))}</td>')),
        ("Site", h.get("site") or "not recorded (journal not signed by a site key)"),
        (
            "Bench",
            f"{h.get('bench')} (seed {h.get('seed')})"
            if h.get("seed") is not None
            else h.get("bench"),
        ),
        ("Operators", ", ".join(r.operators) or "—"),
        ("Started (wall clock)", h.get("started_wall")),
        ("Duration", f"{r.end_time / 86400:.2f} days of batch time"),
        ("Final state", r.final_state if r.ended else f"{r.final_state} (no batch end recorded)"),
        ("Software", f"poc-twin {h.get('software')}"),
        ("Journal", Raw(f'<td class="mono">{escape(str(r.journal))}</td>')),
    ]
    return _table(
        ("Field", "Value"), ((k, v if isinstance(v, Raw) else (v or "—")) for k, v in rows)
    )


#: What a process engineer calls each process value (the journal's tag stays beside it).
READABLE = {
    "temperature_c": "Temperature",
    "temperature_sp_c": "Temperature setpoint (device)",
    "do_pct": "Dissolved oxygen",
    "ph": "pH",
    "volume_ml": "Culture volume",
    "viable_cells_per_ml": "Viable cell density (in-line)",
    "rocking_rpm": "Rocking rate",
    "perfusion_ml_per_day": "Perfusion rate",
}


def readable_name(key: str) -> str:
    """``bioreactor.do_pct`` -> ``Dissolved oxygen (bioreactor)``; gas lines by their gas."""
    source, _, tag = key.partition(".")
    if tag in READABLE:
        return f"{READABLE[tag]} ({source})"
    metric, _, line = tag.partition(".")  # a gas line: gas.mass_flow_sccm.o2
    if line:
        gas = {"air": "Air", "o2": "O2", "n2": "N2", "co2": "CO2"}.get(line, line)
        what = metric.removesuffix("_sccm").replace("_", " ")
        return f"{gas} {what} ({source})"
    return f"{tag.replace('_', ' ')} ({source})" if tag else key


def _trends(r: BatchRecord) -> str:
    out = [
        '<p class="legend"><span style="color:#1f5fa8">━ process value (PV)</span>'
        '<span style="color:#27ae60">╌ setpoint (SP)</span>'
        '<span style="color:#c0392b">▼ alarm</span>'
        '<span style="background:#dff0e3">&nbsp;within alarm limits&nbsp;</span>'
        '<span style="color:#c0392b">┈ alarm limit</span>'
        '<span style="background:#f6d7a7">&nbsp;hold&nbsp;</span></p>'
    ]
    alarms = [(a.batch_time, f"{a.source}: {a.text}") for a in r.alarms]
    for s in r.series:
        sp = f" vs setpoint ({len(s.setpoint)} changes)" if s.setpoint else " (no setpoint)"
        title = readable_name(s.key)
        out.append(
            f'<h3>{escape(title)}{escape(sp)} <span class="mono">{escape(s.key)}</span></h3>'
        )
        out.append(
            trend_svg(
                title,
                s.unit,
                s.points,
                s.setpoint,
                end_time=r.end_time,
                holds=r.holds,
                alarms=alarms,
                limits=r.limits.get(s.key, ()),
                phase_limits=r.phase_limits.get(s.key, ()),
            )
        )
    if not r.series:
        out.append("<p><i>no readings in the journal</i></p>")
    return "".join(out)


def _qc_tests(value: Any) -> str:
    """The QC tests a sample was sent for (as the sample event lists them)."""
    return ", ".join(str(t) for t in value) if isinstance(value, list) and value else "—"


def _samples(r: BatchRecord) -> str:
    rows = []
    for t, d, phase in r.samples:
        rows.append(
            (
                bt(t),
                phase.split(":")[-1] or "—",
                f"{float(d.get('viable_cells_per_ml', 0)):.3g}",
                f"{float(d.get('viability_pct', 0)):.1f}",
                f"{float(d.get('transduced_pct', 0)):.1f}",
                f"{float(d.get('glucose_mm', 0)):.2f}",
                f"{float(d.get('lactate_mm', 0)):.2f}",
                _qc_tests(d.get("qc_tests")),
            )
        )
    return _table(
        (
            "Batch time",
            "Phase",
            "VCD (cells/mL)",
            "Viability %",
            "CAR+ %",
            "Glucose mM",
            "Lactate mM",
            "Sent to QC for",
        ),
        rows,
    )


def _results(results: Sequence[Any]) -> str:
    return _table(
        ("Test", "Result", "Criterion", "Verdict", "Source"),
        ((x.name, x.value, x.criterion, _verdict(x.verdict), x.source) for x in results),
    )


def render_html(r: BatchRecord) -> str:
    """The whole batch record as one HTML document."""
    h = r.header
    exceptions = (
        "".join(
            f'<li class="{sev}"><b>{sev.upper()}</b>: {escape(text)}</li>'
            for sev, text in r.exceptions
        )
        or '<li class="pass">No exceptions: every recorded value within limits, '
        "no holds, alarms or refusals.</li>"
    )
    phases = (
        (
            f"{p['kind']} {p['path']}",
            bt(p["start"]),
            bt(p["end"]) if p["end"] is not None else "—",
            f"{((r.end_time if p['end'] is None else p['end']) - p['start']) / 3600:.2f} h",
            p["state"],
            "; ".join(f"{to}: {why or NO_REASON}" for _, to, why in p["why"]),
        )
        for p in r.phases
    )
    sig = r.signatures
    integrity_rows = [
        (
            "Hash chain",
            "intact"
            if r.chain.ok
            else f"BROKEN at event {r.chain.first_bad_seq}: {r.chain.reason}",
        ),
        ("Events verified", r.chain.events),
        ("Chain head", Raw(f'<td class="mono">{escape(r.chain.head)}</td>')),
    ]
    if sig is not None:
        integrity_rows += [
            (
                "Signed checkpoints",
                f"{sig.checkpoints} (key ids: {', '.join(sorted(sig.key_ids)) or '—'})",
            ),
            (
                "Signatures verified",
                f"{sig.verified}" + ("" if sig.verified else " (no public key given)"),
            ),
            ("Unsigned tail", f"{sig.unsigned_tail} events after the last signed head"),
            ("Anchored heads matched", sig.anchors_matched),
        ]
    states = ((bt(t), el, a, b, who, why or NO_REASON) for t, el, a, b, who, why in r.states)
    actions = (
        (
            a.seq,
            bt(a.batch_time),
            a.wall_time,
            a.who,
            a.action,
            a.meaning,
            a.reason,
            a.outcome,
            r.esignatures.get(a.seq, "—"),
        )
        for a in r.actions
    )
    alarms = (
        (
            a.seq,
            bt(a.batch_time),
            a.source,
            a.text,
            *(r.acknowledged.get(a.seq) or ("NOT ACKNOWLEDGED", "", "")),
        )
        for a in r.alarms
    )
    roles = ("Production review", "QA review", "QP / release")
    approvals = r.start_signatures + (
        [(m, who, note, utc) for m, who, note, utc in r.approvals]
        or [(role, "", "", "") for role in roles]
    )
    deviations = ((d.seq, bt(d.batch_time), d.kind, d.source, d.text) for d in r.deviations)
    title = escape(str(h.get("batch_id", "?")))
    subtitle = escape(
        f"{h.get('product', '')} · recipe {h.get('recipe_id')} v{h.get('recipe_version')}"
    )
    sections = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Batch record {title}</title><style>{CSS}</style></head><body>",
        f"<h1>Batch record — {title}</h1><div>{subtitle}</div>",
        _banner(r),
        f'<h2 id="summary">Review by exception</h2><ul id="exceptions">{exceptions}</ul>',
        f'<h2 id="header">Batch identification</h2>{_header(r)}',
        '<h2 id="outcome">Batch outcome</h2>',
        _table(("Figure", "Value"), r.outcome, "no harvest in the journal"),
        '<h2 id="materials">Materials</h2>',
        _table(
            ("Seq", "Batch time", "Material", "Volume", "Lot", "Worked out from"),
            (
                (m.seq, bt(m.batch_time), m.material, f"{m.volume_ml:g} mL", m.lot, m.basis)
                for m in r.materials
            ),
            "no additions",
        ),
        '<h2 id="equipment">Equipment</h2>',
        _table(
            ("Item", "Vendor", "Model", "Serial", "Firmware"),
            r.equipment,
            "the journal holds no equipment identity (recorded since 2026-12-05)",
        ),
        '<h2 id="timeline">Timeline of states</h2>',
        _table(("Batch time", "Element", "From", "To", "By", "Why"), states),
        "<h3>Unit procedures, operations and phases</h3>"
        + _table(("Element", "Start", "End", "Duration", "State", "Why"), phases),
        f'<h2 id="trends">Trends</h2>{_trends(r)}',
        '<h2 id="actions">Operator actions and signatures</h2>',
        _table(ACTION_HEAD, actions, "no operator commands during the batch"),
        '<h2 id="alarms">Alarms and their acknowledgement</h2>',
        _table(
            ("Seq", "Batch time", "Source", "Alarm", "Acknowledged by", "Comment", "When (UTC)"),
            alarms,
            "no alarms during the batch",
        ),
        '<h2 id="deviations">Deviations</h2>',
        _table(("Seq", "Batch time", "Kind", "Source", "Detail"), deviations),
        f'<h2 id="in-process">In-process results</h2>{_samples(r)}',
        _results(r.in_process) if r.in_process else "",
        '<h2 id="release">Release results</h2>'
        + (
            _results(r.release)
            if r.purpose == "product"
            else f"<p>A {escape(r.purpose)} batch: not judged against release criteria.</p>"
        ),
        '<h2 id="integrity">Journal integrity</h2>',
        _table(("Check", "Result"), integrity_rows),
        f"<p>{INTEGRITY_NOTE}</p>",
        '<h2 id="approval">Review and approval</h2>',
        _table(("Signature meaning", "Name (user id)", "Comment", "Signed (UTC)"), approvals),
        "</body></html>\n",
    ]
    return "\n".join(sections)
