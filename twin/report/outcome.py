"""What the batch made and with what: outcomes, materials with their lots and the equipment's
identity (issue 15: the record QA releases from; its timing anomalies: twin.report.timing).

Read from the same journal as the rest of the record; nothing here is a second truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from twin.journal import Event


def was_refused(cut: dict[str, Any]) -> bool:
    """Whether a cut-short transfer's event says the device refused its command (nothing
    moved): ``refused: true``; records made before 2026-12-08 say so only in the message."""
    return cut.get("refused") is True or cut.get("message") == "the device refused it"


__all__ = [
    "MaterialUse",
    "equipment_rows",
    "materials",
    "outcome_rows",
]


@dataclass(frozen=True)
class MaterialUse:
    """One addition to the bag, as journalled with its setpoint."""

    seq: int
    batch_time: float
    material: str
    volume_ml: float
    lot: str
    basis: str
    #: How a hold, stop or abort cut the dose short ("" if it went in whole).
    cut_short: str = ""


def _number(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) and math.isfinite(value) else None


def materials(
    events: list[Event], lots: dict[str, str], phase_lots: dict[str, str]
) -> list[MaterialUse]:
    """Every addition (recipe doses, feeds): material, volume, lot and how it was worked out.

    The lot is the one scanned at the bedside where the phase asked for a scan, else
    ``lots`` (given for the run, ``run --lot``), else ``phase_lots`` (fixed by the recipe)."""
    # Doses a hold, stop or abort cut short: what the pump's total said went in.
    cut = {e.data.get("setpoint"): e.data for e in events if e.kind == "addition_interrupted"}
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
        basis = _basis_text(e.data.get("basis"))
        stopped, short = cut.get(e.seq), ""
        if stopped is not None:
            delivered = _number(stopped.get("delivered_ml"))
            by = f"cut short by the {stopped.get('on', 'hold')}"
            if was_refused(stopped):
                by = "refused by the device"
            if delivered is None:
                short = f"{by}: what went in is not known ({_ml(volume)} mL asked)"
            else:
                short = f"{by}: {_ml(delivered)} of {_ml(volume)} mL went in"
                volume = delivered
            basis += f"; {short}"
            short = f"{material} (event {e.seq}) {short}"
        used.append(MaterialUse(e.seq, e.batch_time, material, volume, str(lot), basis, short))
    return used


def _ml(volume: float | None) -> str:
    """A volume as the record shows it: to 0.01 mL, an addition pump's resolution."""
    return "?" if volume is None else f"{round(volume, 2):g}"


def _basis_text(basis: Any) -> str:
    if not isinstance(basis, dict):
        return "as written in the recipe"
    if "moi" in basis:
        cells = _number(basis.get("viable_cells")) or 0.0
        titre = _number(basis.get("titre_tu_per_ml")) or 0.0
        return f"MOI {basis.get('moi')} x {cells:.3g} viable cells / {titre:.3g} TU/mL"
    if "below" in basis:
        return f"feed: glucose {basis.get('glucose_mm')} mM below {basis.get('below')} mM"
    if "rest_of_ml" in basis:
        rest_of, went_in = _number(basis.get("rest_of_ml")), _number(basis.get("delivered_ml"))
        return (
            f"the rest of the {_ml(rest_of)} mL dose (event {basis.get('setpoint')}):"
            f" {_ml(went_in)} mL went in before it was cut short"
        )
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
