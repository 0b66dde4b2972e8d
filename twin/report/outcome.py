"""What the batch made and with what: outcomes, materials with their lots, the equipment's
identity, and timing anomalies a reviewer must see (issue 15: the record QA releases from).

Read from the same journal as the rest of the record; nothing here is a second truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from twin.journal import Event

__all__ = [
    "MaterialUse",
    "anomalies",
    "equipment_rows",
    "materials",
    "outcome_rows",
]

HOUR = 3600.0
#: A hold or pause longer than this is a timing anomaly (a person left a batch waiting).
LONG_WAIT_H = 24.0
#: A phase may overrun its planned time by this share (and an hour) before it is one.
OVERRUN_SHARE = 0.10


@dataclass(frozen=True)
class MaterialUse:
    """One addition to the bag, as journalled with its setpoint."""

    seq: int
    batch_time: float
    material: str
    volume_ml: float
    lot: str
    basis: str


def _number(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) and math.isfinite(value) else None


def materials(
    events: list[Event], lots: dict[str, str], phase_lots: dict[str, str]
) -> list[MaterialUse]:
    """Every addition (recipe doses, feeds): material, volume, lot and how it was worked out.

    The lot is the one scanned at the bedside where the phase asked for a scan, else
    ``lots`` (given for the run, ``run --lot``), else ``phase_lots`` (fixed by the recipe)."""
    used: list[MaterialUse] = []
    for e in events:
        parameter = e.data.get("parameter") if e.kind == "setpoint" else None
        if not isinstance(parameter, str) or not parameter.startswith("add_"):
            continue
        volume = _number(e.data.get("value"))
        if volume is None:
            continue
        material = parameter.removeprefix("add_")
        scanned = e.data.get("lot")  # the operator's scan of the container, checked
        lot = scanned or lots.get(material) or phase_lots.get(material) or "not recorded"
        basis = e.data.get("basis")
        used.append(
            MaterialUse(e.seq, e.batch_time, material, volume, str(lot), _basis_text(basis))
        )
    return used


def _basis_text(basis: Any) -> str:
    if not isinstance(basis, dict):
        return "as written in the recipe"
    if "moi" in basis:
        cells = _number(basis.get("viable_cells")) or 0.0
        titre = _number(basis.get("titre_tu_per_ml")) or 0.0
        return f"MOI {basis.get('moi')} x {cells:.3g} viable cells / {titre:.3g} TU/mL"
    if "below" in basis:
        return f"feed: glucose {basis.get('glucose_mm')} mM below {basis.get('below')} mM"
    if "above" in basis:
        return f"feed: {basis.get('viable_cells_per_ml')} cells/mL above {basis.get('above')}"
    return ", ".join(f"{k} {v}" for k, v in basis.items())


def equipment_rows(identity: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(item, vendor, model, serial, firmware) of each device as it answered at the start."""
    rows = []
    for name, ident in sorted(identity.items()):
        if not isinstance(ident, dict):
            continue
        if "error" in ident:
            rows.append((name, "did not answer", str(ident["error"]), "", ""))
            continue
        rows.append(
            (
                name,
                str(ident.get("vendor", "")),
                str(ident.get("model", "")),
                str(ident.get("serial", "")),
                str(ident.get("firmware", "")),
            )
        )
    return rows


def outcome_rows(
    harvest: dict[str, Any] | None,
    seeded: float | None,
    patient_weight_kg: float | None,
    formulation: dict[str, Any] | None = None,
    *,
    formulates: bool = False,
) -> list[tuple[str, str]]:
    """The product as harvested: volume, viable cells, fold, viability, CAR+, the dose
    per kg where the recipe declares the patient's weight, and the formulated dose where the
    recipe formulates one (or that it was not, when it should have been)."""
    if not harvest:
        return [("Harvest", "no harvest in the journal")]
    cells = _number(harvest.get("viable_cells"))
    volume = _number(harvest.get("volume_ml"))
    viability = _number(harvest.get("viability_pct"))
    car = _number(harvest.get("transduced_pct"))
    rows = [
        ("Harvest volume", f"{volume:.0f} mL" if volume is not None else "not recorded"),
        ("Viable cells", f"{cells:.3g}" if cells is not None else "not recorded"),
    ]
    if cells is not None and seeded:
        rows.append(("Fold expansion", f"{cells / seeded:.1f}x (from {seeded:.3g} seeded)"))
    rows.append(("Viability", f"{viability:.1f} %" if viability is not None else "not recorded"))
    rows.append(("CAR+ (transduced)", f"{car:.1f} %" if car is not None else "not recorded"))
    if cells is not None and car is not None:
        car_cells = cells * car / 100.0
        rows.append(("CAR+ viable cells", f"{car_cells:.3g}"))
        if patient_weight_kg:
            per_kg = car_cells / patient_weight_kg
            rows.append(
                (
                    "Dose available",
                    f"{per_kg:.3g} CAR+ viable cells/kg for {patient_weight_kg:g} kg",
                )
            )
    if formulation:
        rows += _formulated(formulation)
    elif formulates:
        rows.append(("Formulated dose", "not formulated: no formulation in the journal"))
    return rows


def _formulated(f: dict[str, Any]) -> list[tuple[str, str]]:
    """The infusion bag: the dose, its volume and density, and what was left of the harvest."""
    dose, per_kg = _number(f.get("dose_car_positive_cells")), _number(f.get("dose_per_kg"))
    weight, volume = _number(f.get("patient_weight_kg")), _number(f.get("final_volume_ml"))
    density, drawn = _number(f.get("viable_cells_per_ml")), _number(f.get("harvest_drawn_ml"))
    doses, retained = _number(f.get("doses_in_harvest")), _number(f.get("retained_ml"))
    if None in (dose, per_kg, weight, volume, density, drawn, doses, retained):
        return [("Formulated dose", "formulation recorded without its figures")]
    return [
        (
            "Formulated dose",
            f"{dose:.3g} CAR+ viable cells ({per_kg:.3g}/kg x {weight:g} kg) in "
            f"{volume:g} mL, {density:.3g} viable cells/mL",
        ),
        (
            "Harvest drawn",
            f"{drawn:.1f} mL ({doses:.1f} doses in the harvest; {retained:.1f} mL retained)",
        ),
    ]


def anomalies(
    holds: list[tuple[float, float | None]],
    pauses: list[tuple[float, float | None]],
    phases: list[dict[str, Any]],
    planned_h: dict[str, float],
    end_time: float,
) -> list[str]:
    """Every timing anomaly a reviewer must judge: long holds and pauses, and phases that
    ran far past their planned time (holds included: a culture held a week is no culture
    of a day)."""
    found: list[str] = []
    for what, spans in (("hold", holds), ("pause", pauses)):
        for start, end in spans:
            length_h = ((end if end is not None else end_time) - start) / HOUR
            if length_h > LONG_WAIT_H:
                found.append(
                    f"a {what} of {_duration(length_h)} from batch time {start / HOUR:.1f} h "
                    f"(longer than {LONG_WAIT_H:g} h)"
                )
    for phase in phases:
        planned = planned_h.get(str(phase.get("path")))
        start, end = phase.get("start"), phase.get("end")
        if planned is None or start is None:
            continue
        took_h = ((end if end is not None else end_time) - start) / HOUR
        if took_h > planned * (1.0 + OVERRUN_SHARE) + 1.0:
            label = str(phase.get("path", "")).split("/")[-1].split(":")[-1]
            found.append(f"phase {label} took {_duration(took_h)} of {_duration(planned)} planned")
    return found


def _duration(hours: float) -> str:
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"
