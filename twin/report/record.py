"""The batch record read from the journal: header, states, trends, actions, deviations, results.

One pass over the events builds everything the report shows, so the report can
never disagree with the journal (there is no second truth to disagree with).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twin.access.esign import SIMULATED_PERSON, signer_of
from twin.errors import PocTwinError
from twin.journal import CHECKPOINT, Event, VerifyResult, read_events, verify
from twin.report.criteria import Result, judge_release
from twin.report.elements import HOLD_STATES, Episode, Episodes, span, timed
from twin.report.outcome import (
    MaterialUse,
    equipment_rows,
    materials,
    outcome_rows,
    was_refused,
)
from twin.report.qc import QC_RESULT
from twin.report.timing import anomalies, planned_hours
from twin.signing import Anchor, SignatureCheck, check_signatures

if TYPE_CHECKING:
    from twin.recipe.model import Recipe

__all__ = [
    "Action",
    "BatchRecord",
    "Deviation",
    "Series",
    "build_record",
    "flatten_values",
    "recipe_phases",
    "recorded_recipe",
]

#: Process value -> the setpoint parameter journalled for it (PV vs SP trends).
SETPOINT_OF = {
    "temperature_c": "temperature_sp",
    "rocking_rpm": "rocking_sp",
    "perfusion_ml_per_day": "perfusion_sp",
}
#: Read-backs and housekeeping values that are not process values.
NOT_PV = {"heartbeat", "status", "temperature_sp_c"}
UNITS = {"_pct": "%", "_c": "°C", "_rpm": "rpm", "_per_ml": "cells/mL", "_ml": "mL"}
UNITS_EXACT = {"do_pct": "% air sat.", "ph": "pH", "perfusion_ml_per_day": "mL/d"}
ENDING = {"Stopping": "stop", "Aborting": "abort"}


@dataclass
class Series:
    """One process value over batch time, with its setpoint as a step line (None: no SP)."""

    key: str
    unit: str
    points: list[tuple[float, float]] = field(default_factory=list)
    setpoint: list[tuple[float, float | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Action:
    """An operator action as its electronic-signature record: who, when, what it meant, why."""

    seq: int
    batch_time: float
    wall_time: str
    who: str
    action: str
    meaning: str
    reason: str
    outcome: str


@dataclass(frozen=True)
class Deviation:
    """Something a reviewer must look at: hold, alarm, refused command, failed safe state."""

    seq: int
    batch_time: float
    kind: str
    source: str
    text: str


@dataclass
class BatchRecord:
    """Everything the batch record shows, read from one journal."""

    journal: Path
    chain: VerifyResult
    signatures: SignatureCheck | None
    header: dict[str, Any] = field(default_factory=dict)
    operators: list[str] = field(default_factory=list)
    final_state: str = "not ended"
    ended: bool = False
    end_time: float = 0.0
    events: int = 0
    #: The timeline of states: (batch time, element, from, to, who, why); every change of
    #: the procedure, and of a unit procedure, operation or phase through its own hold, stop
    #: or abort (not those mirrored down from the procedure or an element above it).
    states: list[tuple[float, str, str, str, str, str]] = field(default_factory=list)
    #: Unit procedures, operations and phases in the order they started: ``kind``, ``path``,
    #: ``start``, ``end``, ``state``, ``why`` (each transition's (batch time, to, reason))
    #: and ``holds`` (their own holds, not one of the procedure or an element above mirrored
    #: down).
    phases: list[dict[str, Any]] = field(default_factory=list)
    holds: list[tuple[float, float | None]] = field(default_factory=list)
    #: Holds, stops and aborts given to a unit procedure, operation or phase (each once, at
    #: the element it was given to); each is a deviation too.
    episodes: list[Episode] = field(default_factory=list)
    #: A sentence for each unit procedure, operation or phase stopped or aborted before its
    #: end: which, by whom, when, why (and how much of a timed phase ran): a major exception.
    ended_early: list[str] = field(default_factory=list)
    alarms: list[Deviation] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)
    samples: list[tuple[float, dict[str, Any], str]] = field(default_factory=list)
    #: Events the record could not take: forged or damaged (a critical exception each).
    malformed: list[str] = field(default_factory=list)
    #: What the recipe says a batch of it is for: product, commissioning or development.
    purpose: str = "product"
    pauses: list[tuple[float, float | None]] = field(default_factory=list)
    outcome: list[tuple[str, str]] = field(default_factory=list)
    materials: list[MaterialUse] = field(default_factory=list)
    equipment: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    #: Timing anomalies (long waits on a person, phases or the batch far past their plan).
    timing: list[str] = field(default_factory=list)
    #: Alarm limits of the recipe's batch-wide monitors by series key: (label, value).
    limits: dict[str, list[tuple[str, float]]] = field(default_factory=dict)
    #: Alarm limits of phases' own monitors by series key: (label, value, start, end), over
    #: the batch time the phase ran (end None: it runs still).
    phase_limits: dict[str, list[tuple[str, float, float, float | None]]] = field(
        default_factory=dict
    )
    in_process: list[Result] = field(default_factory=list)
    release: list[Result] = field(default_factory=list)
    harvest: dict[str, Any] | None = None
    #: Harvests a hold, stop or abort cut short: what each had drained, and by what.
    harvest_cuts: list[str] = field(default_factory=list)
    formulation: dict[str, Any] | None = None
    #: Events of QC results the twin's simulated lab entered (judged, labelled simulated).
    simulated_qc: set[int] = field(default_factory=set)
    exceptions: list[tuple[str, str]] = field(default_factory=list)
    #: Electronic signatures by the seq of the act they sign: "Name (id), meaning, UTC".
    esignatures: dict[int, str] = field(default_factory=dict)
    #: Alarm acknowledgements by the alarm's seq: (who, comment, wall time).
    acknowledged: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    #: QA's review and approval: (meaning, "Name (id)", comment, UTC).
    approvals: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: The signed start of a batch on a development bench (run-development), same shape.
    start_signatures: list[tuple[str, str, str, str]] = field(default_factory=list)
    #: A person's acts no e-signature signs: "event N (kind by who)".
    unsigned: list[str] = field(default_factory=list)

    @property
    def verified(self) -> bool:
        return self.chain.ok and (self.signatures is None or self.signatures.ok)


def flatten_values(values: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric process values of a reading, nested dicts as ``outer.inner``."""
    flat: dict[str, float] = {}
    for key, value in values.items():
        if key in NOT_PV or key == "setpoint_sccm":
            continue
        if isinstance(value, dict):
            flat.update(flatten_values(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def unit_of(key: str) -> str:
    """A display unit from the field name (fields carry their unit by convention)."""
    name = key.split(".")[-1] if key.count(".") > 1 else key.split(".", 1)[-1]
    if name in UNITS_EXACT:
        return UNITS_EXACT[name]
    if "sccm" in key:
        return "sccm"
    return next((u for suffix, u in UNITS.items() if name.endswith(suffix)), "")


def setpoint_param(pv_key: str) -> str | None:
    """Name of the setpoint journalled for a PV key ``equipment.value[.sub]``."""
    _, _, name = pv_key.partition(".")
    if name.startswith("mass_flow_sccm."):
        return f"{name.split('.')[-1]}_flow_sp"
    return SETPOINT_OF.get(name)


def recorded_recipe(started: dict[str, Any]) -> Recipe | None:
    """The recipe as recorded at batch start (its text and parameters); None if unreadable."""
    recipe = started.get("recipe") or {}
    text = recipe.get("text") if isinstance(recipe, dict) else None
    if not text:
        return None
    from twin.recipe import load_recipe
    from twin.sourcemap import recorded_text

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            params = recipe.get("parameters") or {}
            with recorded_text():  # as the version that ran it read it
                return load_recipe(path, {k: str(v) for k, v in params.items()} or None).model
        except (PocTwinError, TypeError, ValueError, AttributeError):
            return None


def recipe_phases(model: Recipe | None) -> dict[str, Any]:
    """Phase parameters by the path the journal names them with (``unit/operation/n:label``)."""
    phases: dict[str, Any] = {}
    for unit in model.procedure if model is not None else ():
        for op in unit.operations:
            for i, ph in enumerate(op.phases):
                label = ph.name or ph.phase
                phases[f"{unit.unit_procedure}/{op.operation}/{i + 1}:{label}"] = ph
    return phases


class _Builder:
    def __init__(self, record: BatchRecord) -> None:
        self.r = record
        self.comments: dict[int, str] = {}  # record_signature comments by seq
        self.series: dict[str, Series] = {}
        self.setpoints: dict[str, list[tuple[float, float | None]]] = {}
        self.recipe_phases: dict[str, Any] = {}
        self.model: Recipe | None = None
        self.started_seq: int | None = None
        self.phase_open: dict[str, dict[str, Any]] = {}
        self.running_phase: str | None = None
        self.episodes = Episodes()

    def started(self, e: Event) -> None:
        d = e.data
        self.started_seq = e.seq
        recipe = d.get("recipe") or {}
        model = self.model = recorded_recipe(d)
        self.recipe_phases = recipe_phases(model)
        for monitor in model.monitors if model is not None else ():
            for key, label, value in monitor_limits(monitor):
                self.r.limits.setdefault(key, []).append((label, value))
        header = _recipe_header(recipe.get("text", ""))
        self.r.header = {
            "batch_id": d.get("batch_id", "?"),
            "product": header.get("product", recipe.get("id", "?")),
            "recipe_id": recipe.get("id", "?"),
            "recipe_version": recipe.get("version", "?"),
            "recipe_status": recipe.get("status", "?"),
            "purpose": header.get("purpose", "product"),
            "recipe_sha256": recipe.get("sha256", "?"),
            "approved_by": header.get("approved_by"),
            "approved_on": header.get("approved_on"),
            "patient_id": d.get("patient_id"),
            "bag_id": d.get("bag_id"),
            "site": d.get("site"),
            "bench": (d.get("bench") or {}).get("name"),
            "seed": (d.get("bench") or {}).get("seed"),
            "development": bool((d.get("bench") or {}).get("development")),
            "software": d.get("poc_twin_version"),
            "started_wall": e.wall_time,
        }
        self._operator(d.get("operator"))

    def _operator(self, who: Any) -> None:
        if who and who != "engine" and who not in self.r.operators:
            self.r.operators.append(str(who))

    def transition(self, e: Event) -> None:
        d, t = e.data, e.batch_time
        episode, shown = self.episodes.see(e)
        kind, _, path = e.source.partition(":")
        if kind == "procedure" or shown:  # an element's own hold, stop or abort: shown too
            element = "procedure" if kind == "procedure" else f"{kind} {path}"
            self.r.states.append(
                (t, element, d.get("from", ""), d.get("to", ""), d.get("who", ""), d.get("why", ""))
            )
        if kind == "procedure":
            to = d.get("to")
            self.r.final_state = to or self.r.final_state
            if to == "Holding":
                if not (self.r.holds and self.r.holds[-1][1] is None):
                    # (held again while Restarting: the batch never ran, one hold goes on)
                    self.r.holds.append((t, None))
                self.r.deviations.append(
                    Deviation(e.seq, t, "hold", d.get("who", ""), d.get("why", ""))
                )
            elif to not in HOLD_STATES and self.r.holds and self.r.holds[-1][1] is None:
                self.r.holds[-1] = (self.r.holds[-1][0], t)
            if to == "Pausing":
                self.r.pauses.append((t, None))
            elif to not in ("Pausing", "Paused") and self.r.pauses and self.r.pauses[-1][1] is None:
                self.r.pauses[-1] = (self.r.pauses[-1][0], t)
            if to in ENDING:
                why = d.get("why", "")
                self.r.deviations.append(Deviation(e.seq, t, ENDING[to], d.get("who", ""), why))
        elif e.source.startswith(("phase:", "operation:", "unit:")):
            self._element(e, own_hold=episode is not None and episode.kind == "hold")
        if e.source.startswith("phase:"):
            path = e.source.removeprefix("phase:")
            to = d.get("to")
            params = self.recipe_phases.get(path)
            do_sp = getattr(params, "do_setpoint_pct", None)
            if to == "Running":
                self.running_phase = path
                if do_sp is not None:
                    self.setpoints.setdefault("bioreactor.do_pct", []).append((t, float(do_sp)))
            elif self.running_phase == path:
                self.running_phase = None
                if do_sp is not None:
                    self.setpoints.setdefault("bioreactor.do_pct", []).append((t, None))

    def _element(self, e: Event, own_hold: bool) -> None:
        """A unit procedure's, operation's or phase's transition, with its reason; ``own_hold``:
        a hold given to it (not one of the procedure or an element above mirrored down)."""
        kind, _, path = e.source.partition(":")
        d, t, to = e.data, e.batch_time, e.data.get("to")
        element = self.phase_open.get(e.source)
        if element is None:
            element = {"kind": kind, "path": path, "start": t, "end": None, "holds": []}
            element["why"] = []
            self.phase_open[e.source] = element
            self.r.phases.append(element)
        element["state"] = to
        element["why"].append((t, str(to), str(d.get("why") or "")))
        if to in ("Complete", "Stopped", "Aborted"):
            element["end"] = t
        holds = element["holds"]
        open_hold = bool(holds) and holds[-1][1] is None  # held again while Restarting
        if own_hold and not open_hold:
            holds.append((t, None))  # its own hold (a procedure's is mirrored down)
        elif to not in HOLD_STATES and holds and holds[-1][1] is None:
            holds[-1] = (holds[-1][0], t)

    def command(self, e: Event) -> None:
        d = e.data
        accepted = d.get("accepted", True)
        self._operator(d.get("operator"))
        self.r.actions.append(
            Action(
                e.seq,
                e.batch_time,
                e.wall_time,
                str(d.get("operator", "?")),
                str(d.get("command", "?")),
                str(d.get("meaning", "")),
                str(d.get("reason", "")),
                "accepted" if accepted else f"refused (state {d.get('state', '?')})",
            )
        )
        if not accepted:
            who, state = d.get("operator"), d.get("state")
            text = f"{d.get('command')} by {who} refused in {state}: {d.get('reason', '')}"
            # The engine's own reaction (an alarm's or a failure's hold on a batch already
            # held) is no operator's command: listed, not counted as a refusal of a person.
            machine = who == "engine" or str(who).startswith("alarm:")
            kind = "reaction not needed" if machine else "refused command"
            self.r.deviations.append(Deviation(e.seq, e.batch_time, kind, e.source, text))

    def signed_action(self, e: Event) -> None:
        """Any other event carrying who and meaning (e.g. identity confirmation) is an action."""
        d = e.data
        who = d.get("operator") or d.get("who")
        if not who or "meaning" not in d:
            return
        self._operator(who)
        ok = d.get("match", d.get("accepted", True))
        keys = ("patient_id", "bag_id", "material", "lot", "expiry")
        detail = ", ".join(f"{k} {d[k]}" for k in keys if d.get(k))
        self.r.actions.append(
            Action(
                e.seq,
                e.batch_time,
                e.wall_time,
                str(who),
                e.kind.replace("_", " ") + (f" ({detail})" if detail else ""),
                str(d["meaning"]),
                str(d.get("reason", "")),
                "ok" if ok else "MISMATCH" if "match" in d else f"REFUSED: {d.get('refused')}",
            )
        )
        if not ok:
            why = f"{d['meaning']}: {d['refused']}" if d.get("refused") else str(d["meaning"])
            self.r.deviations.append(
                Deviation(e.seq, e.batch_time, e.kind.replace("_", " "), e.source, why)
            )

    def signature(self, e: Event) -> None:
        d = e.data
        seq = d.get("signed_seq")
        if not isinstance(seq, int):
            return
        name = f"{d.get('name', '?')} ({d.get('user', '?')})"
        self.r.esignatures[seq] = f"{name}, {d.get('meaning', '?')}, {d.get('utc', '?')}"
        if seq == self.started_seq:  # the batch_started event: a development bench's start
            bench = self.r.header.get("bench") or "a development bench"
            self.r.start_signatures.append(
                (
                    f"Batch started on {bench} ({d.get('act')}): {d.get('meaning')}",
                    name,
                    "",
                    str(d.get("utc", "")),
                )
            )
        if d.get("act") in ("review", "approve"):
            self.r.approvals.append(
                (str(d.get("meaning")), name, self.comments.get(seq, ""), str(d.get("utc", "")))
            )

    def alarm_ack(self, e: Event) -> None:
        d = e.data
        seq = d.get("alarm_seq")
        if isinstance(seq, int):
            self.r.acknowledged[seq] = (str(d.get("user")), str(d.get("comment")), e.wall_time)
        self._operator(d.get("user"))
        what = f"acknowledge alarm {seq}" + (" (critical)" if d.get("critical") else "")
        self.r.actions.append(
            Action(
                e.seq,
                e.batch_time,
                e.wall_time,
                str(d.get("user", "?")),
                what,
                "performed",
                str(d.get("comment", "")),
                "ok",
            )
        )

    def record_signature(self, e: Event) -> None:
        self.comments[e.seq] = str(e.data.get("comment", ""))

    def access_refused(self, e: Event) -> None:
        d = e.data
        text = f"{d.get('act')} by '{d.get('user')}' refused: {d.get('reason')}"
        self.r.deviations.append(
            Deviation(e.seq, e.batch_time, "refused signature", e.source, text)
        )

    def deviation(self, e: Event) -> None:
        """A recorded deviation (e.g. the process was interrupted and the batch resumed)."""
        d = e.data
        text = str(d.get("message", ""))
        self.r.deviations.append(
            Deviation(e.seq, e.batch_time, str(d.get("deviation", "deviation")), e.source, text)
        )
        self.signed_action(e)

    def reading(self, e: Event) -> None:
        values = e.data.get("values")
        if not isinstance(values, dict):
            return
        for key, value in flatten_values(values).items():
            full = f"{e.source}.{key}"
            s = self.series.get(full)
            if s is None:
                s = self.series[full] = Series(full, unit_of(full))
            s.points.append((e.batch_time, value))

    def setpoint(self, e: Event) -> None:
        value = e.data.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            key = f"{e.source}.{e.data.get('parameter')}"
            self.setpoints.setdefault(key, []).append((e.batch_time, float(value)))

    def alarm(self, e: Event) -> None:
        d = e.data
        text = str(d.get("message") or d.get("alarm") or "alarm")
        dev = Deviation(e.seq, e.batch_time, "alarm", e.source, text)
        self.r.alarms.append(dev)
        self.r.deviations.append(dev)

    def sample(self, e: Event) -> None:
        phase = self.running_phase or ""
        self.r.samples.append((e.batch_time, e.data, phase))
        params = self.recipe_phases.get(phase)
        if getattr(params, "phase", None) != "sample":
            return
        checks = [
            ("viability_pct", "min_viability_pct", "%", "Viability"),
            ("viable_cells_per_ml", "min_viable_cells_per_ml", "cells/mL", "Viable cell density"),
        ]
        for key, limit_name, unit, label in checks:
            limit = getattr(params, limit_name, None)
            if limit is None or key not in e.data:
                continue
            value = float(e.data[key])
            self.r.in_process.append(
                Result(
                    f"{label} ({phase.split(':')[-1]})",
                    f"{value:.4g} {unit}",
                    f"≥ {float(limit):g} {unit}",
                    "pass" if value >= float(limit) else "fail",
                    f"event {e.seq}",
                )
            )

    def element_episodes(self) -> None:
        """Each hold, stop and abort given to a unit procedure, operation or phase, once:
        a deviation (holds with how long), and an element ended early a major exception."""
        r = self.r
        r.episodes = self.episodes.episodes
        for ep in r.episodes:
            if ep.kind == "hold":
                how_long = timed(ep, r.end_time, ended=r.ended)
                text = f"{ep.element} held by {ep.who} for {how_long}: {ep.why}"
                r.deviations.append(Deviation(ep.seq, ep.start, "hold", ep.who, text))
                continue
            ran = self._ran(ep)
            text = f"{ep.element} {ep.done}: {ep.why}" + (f" ({ran})" if ran else "")
            r.deviations.append(Deviation(ep.seq, ep.start, ep.kind, ep.who, text))
            r.ended_early.append(
                f"{ep.element} {ep.done} by {ep.who} at batch time {ep.start / 3600:.1f} h: "
                f"{ep.why}" + (f" ({ran})" if ran else "")
            )
        r.deviations.sort(key=lambda d: d.seq)  # in the journal's order, as they happened

    def _ran(self, ep: Episode) -> str:
        """How much of its planned duration each timed phase (a culture, a wait) the stop or
        abort ended had run: ``phase culture ran 7.0 h of the 72.0 h planned``."""
        said = []
        for element in self.r.phases:
            path = str(element["path"])
            inside = path == ep.path if ep.level == "phase" else path.startswith(ep.path + "/")
            if element["kind"] != "phase" or not inside or element["state"] == "Complete":
                continue
            ph = self.recipe_phases.get(path)
            kind = getattr(ph, "phase", None)
            planned = getattr(ph, "duration_h", None) if kind in ("culture", "wait") else None
            if planned is None or element["start"] is None:
                continue
            ended = [t for t, to, _ in element["why"] if to in _ENDED]
            if ended and ended[0] < ep.start:  # an earlier stop or abort ended it: not this one
                continue
            running, since = 0.0, None
            for t, to, _ in element["why"]:
                if since is not None:
                    running += t - since
                since = t if to == "Running" else None
            label = "it" if ep.level == "phase" else f"phase {path.split(':')[-1]}"
            said.append(f"{label} ran {span(running)} of the {span(float(planned) * 3600)} planned")
        return "; ".join(said)

    def finish(self) -> None:
        for key, s in sorted(self.series.items()):
            param = setpoint_param(key)
            equipment = key.split(".", 1)[0]
            if key in self.setpoints:
                s.setpoint = self.setpoints[key]
            elif param is not None:
                s.setpoint = self.setpoints.get(f"{equipment}.{param}", [])
            self.r.series.append(s)


#: The states a phase ends in.
_ENDED = ("Complete", "Stopped", "Aborted")


def _recipe_header(text: str) -> dict[str, Any]:
    from ruamel.yaml import YAML

    with contextlib.suppress(Exception):
        data = YAML(typ="safe").load(text) or {}
        header = data.get("recipe") or {}
        return {k: str(v) for k, v in header.items() if v is not None}
    return {}


def _harvest_cut(e: Event) -> str:
    drained = e.data.get("drained_ml")
    by = f"harvest (event {e.data['setpoint']}) cut short by the {e.data.get('on', 'hold')}"
    if was_refused(e.data):
        by = f"harvest (event {e.data['setpoint']}) refused by the device"
    if type(drained) not in (int, float):
        return f"{by}: what it drained is not known"
    return f"{by}: {round(float(drained), 2):g} mL drained into the product bag before it"


def _malformed(e: Event, exc: Exception) -> str:
    """A sentence for an event that lacks what every writer records (forged or damaged)."""
    what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)[:80]
    return f"event {e.seq} ({e.kind}) is not as any writer records it ({what})"


def _qc_results(events: list[Event], record: BatchRecord) -> dict[str, tuple[float, int]]:
    """The latest QC result per test; an entry without a test name or a finite number is
    named as malformed instead of judged."""
    qc: dict[str, tuple[float, int]] = {}
    for e in events:
        if e.kind != QC_RESULT:
            continue
        test, value = e.data.get("test"), e.data.get("value")
        if not isinstance(test, str) or type(value) not in (int, float):
            record.malformed.append(_malformed(e, ValueError("a test and a numeric value")))
            continue
        qc[test] = (float(value), e.seq)
        if str(e.data.get("operator", "")).startswith(SIMULATED_PERSON):
            record.simulated_qc.add(e.seq)
    return qc


def _unsigned(events: list[Event], signed: dict[int, str]) -> list[str]:
    """A person's acts without an e-signature: those a site user signs (a start only on a
    development bench), and a hold or stop given with Ctrl-C at the batch's console."""
    unsigned = []
    for e in events:
        who = signer_of(e)
        if e.kind == "command" and e.data.get("via") == "ctrl-c":
            who = str(e.data.get("operator", "?"))
        bench = e.data.get("bench") if e.kind == "batch_started" else None
        if e.kind == "batch_started" and not (isinstance(bench, dict) and bench.get("development")):
            continue  # a start is a signed act only on a development bench
        if who is not None and e.seq not in signed:
            unsigned.append(f"event {e.seq} ({e.kind.replace('_', ' ')} by {who})")
    return unsigned


def _what_was_made(
    record: BatchRecord, events: list[Event], phases: dict[str, Any], model: Recipe | None
) -> None:
    """Outcome, materials with lots, equipment identity and timing anomalies."""
    started = events[0].data if events and events[0].kind == "batch_started" else {}
    record.purpose = str(record.header.get("purpose") or "product")
    lots = started.get("lots") if isinstance(started.get("lots"), dict) else {}
    phase_lots = {
        str(ph.material): str(ph.lot) for ph in phases.values() if getattr(ph, "lot", None)
    }
    record.materials = materials(events, {str(k): str(v) for k, v in lots.items()}, phase_lots)
    identity = next((e.data for e in events if e.kind == "equipment_identity"), {})
    record.equipment = equipment_rows(identity)
    weights = [
        float(ph.target.patient_weight)
        for ph in phases.values()
        if getattr(ph, "target", None) is not None and ph.target.patient_weight
    ]
    seeded = started.get("seeded_viable_cells")
    record.outcome = outcome_rows(
        record.harvest,
        float(seeded) if type(seeded) in (int, float) else None,
        weights[0] if weights else None,
        record.formulation,
        formulates=any(ph.phase == "formulate" for ph in phases.values()),
    )
    planned = planned_hours(model) if model is not None else None
    record.timing = anomalies(
        record.holds, record.pauses, record.phases, phases, record.end_time, planned
    )


def monitor_limits(monitor: Any) -> list[tuple[str, str, float]]:
    """A monitor's alarm limits as (series key, label naming its side, value)."""
    key, name = f"{monitor.equipment}.{monitor.pv}", monitor.name or monitor.pv
    return [
        (key, name if name.endswith(side) else f"{name} {side}", float(value))
        for side, value in (("high", monitor.high), ("low", monitor.low))
        if value is not None
    ]


def phase_limit_spans(
    elements: list[dict[str, Any]], recipe_phases: dict[str, Any]
) -> dict[str, list[tuple[str, float, float, float | None]]]:
    """Each phase's own monitors over the batch time that phase ran, by series key."""
    spans: dict[str, list[tuple[str, float, float, float | None]]] = {}
    for element in elements:
        phase = recipe_phases.get(str(element.get("path")))
        if element.get("kind") != "phase" or phase is None:
            continue
        for monitor in getattr(phase, "monitors", None) or ():
            for key, label, value in monitor_limits(monitor):
                spans.setdefault(key, []).append((label, value, element["start"], element["end"]))
    return spans


def build_record(
    path: Path | str, public_key: Any = None, anchors: list[Anchor] | None = None
) -> BatchRecord:
    """Read and check a journal and gather the batch record from it."""
    path = Path(path)
    chain = verify(path)
    events = list(read_events(path))
    signatures = check_signatures(events, public_key, anchors or ()) if chain.ok else None
    record = BatchRecord(path, chain, signatures, events=len(events))
    b = _Builder(record)
    handlers = {
        "batch_started": b.started,
        "transition": b.transition,
        "command": b.command,
        "reading": b.reading,
        "setpoint": b.setpoint,
        "alarm": b.alarm,
        "sample": b.sample,
        "deviation": b.deviation,
        "signature": b.signature,
        "alarm_ack": b.alarm_ack,
        "record_signature": b.record_signature,
        "access_refused": b.access_refused,
    }
    for e in events:
        record.end_time = max(record.end_time, e.batch_time)
        handler = handlers.get(e.kind)
        try:
            if handler is not None:
                handler(e)
            elif e.kind == "harvest":
                record.harvest = e.data
            elif e.kind == "harvest_interrupted":
                record.harvest_cuts.append(_harvest_cut(e))
            elif e.kind == "formulation":
                record.formulation = e.data
            elif e.kind == "batch_ended":
                record.ended = True
                record.final_state = e.data.get("state", record.final_state)
            elif e.kind == CHECKPOINT:
                record.header["site"] = record.header.get("site") or e.data.get("site")
            else:
                b.signed_action(e)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            record.malformed.append(_malformed(e, exc))  # forged or damaged: named, not a crash
    b.finish()
    b.element_episodes()
    record.phase_limits = phase_limit_spans(record.phases, b.recipe_phases)
    qc = _qc_results(events, record)
    _what_was_made(record, events, b.recipe_phases, b.model)
    record.unsigned = _unsigned(events, record.esignatures)
    if record.purpose == "product":
        record.release = judge_release(record.harvest, qc, simulated=record.simulated_qc)
    if record.holds and record.holds[-1][1] is None:
        record.holds[-1] = (record.holds[-1][0], record.end_time)
    from twin.report.exceptions import review_by_exception

    record.exceptions = review_by_exception(record)
    return record
