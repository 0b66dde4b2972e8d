"""Check a recipe against the bench it will run on, before anything starts.

Every equipment role the recipe needs must be filled by a bench item of the
same type, and every setpoint must lie within that item's limits (bioreactor
4-40 °C, gas full scale and the O2 cap, ...). Problems point at the recipe line.
"""

from __future__ import annotations

from typing import Any

from twin.bench import LoadedBench
from twin.equipment import Gas
from twin.errors import Problem
from twin.recipe.approval import REGISTER_NAME, check_approval
from twin.recipe.loader import LoadedRecipe
from twin.recipe.phases import (
    AddMaterial,
    Culture,
    Electroporate,
    Formulate,
    Harvest,
    MediaExchange,
    SampleCheck,
    SetGas,
    SetRocking,
    SetTemperature,
)

__all__ = ["check_against_bench"]


def _limits(bench: LoadedBench, name: str) -> Any:
    """The equipment limits a bench item's driver enforces (constructing a driver is inert)."""
    spec = bench.spec(name)
    return spec.driver(name, bench.configs[name], None).limits


def _outside(value: float, span: tuple[float, float]) -> bool:
    return not span[0] <= value <= span[1]


def check_against_bench(recipe: LoadedRecipe, bench: LoadedBench) -> list[Problem]:
    """Every reason this recipe must not start on this bench."""
    src = recipe.source
    register = bench.path.parent / REGISTER_NAME
    problems: list[Problem] = check_approval(recipe, bench.model.development, register)
    for role, need in recipe.model.equipment.items():
        have = bench.model.equipment.get(role)
        if have is None:
            problems.append(
                src.problem(
                    ["equipment", role],
                    f"bench '{bench.model.bench}' ({bench.path}) has no equipment '{role}'",
                    key=True,
                )
            )
        elif have.type != need.type:
            problems.append(
                src.problem(
                    ["equipment", role],
                    f"bench item '{role}' is a {have.type}, the recipe needs a {need.type}",
                    key=True,
                )
            )
    if problems:
        return problems
    counted: set[str] = set()  # bioreactors with a cell count taken before this phase
    harvested: set[str] = set()  # bioreactors harvested before this phase
    bags = _BagTotals(bench)  # what the add phases put in each bag, one after another
    for u, unit in enumerate(recipe.model.procedure):
        for o, op in enumerate(unit.operations):
            for i, phase in enumerate(op.phases):
                loc = ["procedure", u, "operations", o, "phases", i]
                lot = getattr(phase, "lot", None)
                if lot is not None and (lot != lot.strip() or not lot.isprintable()):
                    # (checked before a batch starts, not in the schema: a recorded recipe
                    # is still read back for replay whatever it says)
                    problems.append(
                        src.problem(
                            [*loc, "lot"],
                            f"lot {lot!r}: 1-64 printable characters with no space at either "
                            "end, as its label prints it (no scan could match it)",
                        )
                    )
                problems += _check_phase(recipe, bench, phase, loc)
                problems += bags.after(src, phase, loc)
                uncounted = isinstance(phase, AddMaterial) and phase.bioreactor not in counted
                if uncounted and phase.moi is not None:
                    problems.append(
                        src.problem(
                            [*loc, "moi"],
                            f"a dose by MOI needs a cell count of {phase.bioreactor} "
                            "since its last addition (a sample phase, or a culture's "
                            "sample_every_h): cells per mL x the volume now would be wrong",
                        )
                    )
                if isinstance(phase, Formulate) and phase.bioreactor not in harvested:
                    problems.append(
                        src.problem(
                            [*loc, "phase"],
                            f"formulate draws the dose from {phase.bioreactor}'s harvest: "
                            "put a harvest phase of it before this one",
                        )
                    )
                if isinstance(phase, Harvest):
                    harvested.add(phase.bioreactor)
                if isinstance(phase, (AddMaterial, Electroporate)):
                    counted.discard(phase.bioreactor)  # volume changed: the count is stale
                if isinstance(phase, SampleCheck) or (
                    isinstance(phase, Culture)
                    and phase.sample_every_h is not None
                    and phase.sample_every_h <= phase.duration_h
                ):
                    counted.add(phase.bioreactor)
    return problems


def _check_phase(
    recipe: LoadedRecipe, bench: LoadedBench, phase: Any, loc: list[Any]
) -> list[Problem]:
    src = recipe.source
    out: list[Problem] = []
    if isinstance(phase, SetTemperature):
        span = _limits(bench, phase.bioreactor).temperature_c
        if _outside(phase.setpoint_c, span):
            out.append(
                src.problem(
                    [*loc, "setpoint_c"],
                    f"temperature setpoint {phase.setpoint_c:g} °C is outside "
                    f"{phase.bioreactor}'s limits {span[0]:g}-{span[1]:g} °C",
                )
            )
    elif isinstance(phase, SetRocking):
        span = _limits(bench, phase.bioreactor).rocking_rpm
        if _outside(phase.rpm, span):
            out.append(
                src.problem(
                    [*loc, "rpm"],
                    f"rocking {phase.rpm:g} rpm is outside "
                    f"{phase.bioreactor}'s limits {span[0]:g}-{span[1]:g} rpm",
                )
            )
    elif isinstance(phase, SetGas):
        limits = _limits(bench, phase.gas_dispenser)
        for name, sccm in phase.flows_sccm.items():
            gas = Gas[name.upper()]
            full = limits.full_scale_sccm.get(gas)
            where = [*loc, "flows_sccm", name]
            if full is None:
                out.append(src.problem(where, f"{phase.gas_dispenser} has no {name} line"))
            elif sccm > full:
                out.append(
                    src.problem(
                        where,
                        f"{name} flow {sccm:g} sccm exceeds the "
                        f"controller's full scale {full:g} sccm",
                    )
                )
            if gas is Gas.O2 and sccm > limits.o2_cap_sccm:
                out.append(
                    src.problem(
                        where,
                        f"O2 flow {sccm:g} sccm exceeds the O2 cap "
                        f"{limits.o2_cap_sccm:g} sccm (interlock)",
                    )
                )
    elif isinstance(phase, MediaExchange):
        span = _limits(bench, phase.bioreactor).perfusion_ml_per_day
        if _outside(phase.rate_ml_per_h * 24.0, span):
            out.append(
                src.problem(
                    [*loc, "rate_ml_per_h"],
                    f"exchange rate {phase.rate_ml_per_h:g} mL/h is outside "
                    f"{phase.bioreactor}'s perfusion limits "
                    f"{span[0] / 24:g}-{span[1] / 24:g} mL/h",
                )
            )
    elif isinstance(phase, AddMaterial):
        out += _fits_the_bag(src, bench, phase, loc, "adding")
    elif isinstance(phase, Electroporate):
        out += _check_electroporation(src, bench, phase, loc)
    elif isinstance(phase, Culture) and phase.do_setpoint_pct is not None:
        limits = _limits(bench, phase.gas_dispenser)
        if Gas.O2 not in limits.full_scale_sccm or Gas.N2 not in limits.full_scale_sccm:
            out.append(
                src.problem(
                    [*loc, "do_setpoint_pct"],
                    f"DO control needs O2 and N2 lines on {phase.gas_dispenser}",
                )
            )
    return out


def _check_electroporation(
    src: Any, bench: LoadedBench, phase: Any, loc: list[Any]
) -> list[Problem]:
    """Pulse program and chamber within the electroporator's hardware ranges, and the volume
    within the bag it is drawn from."""
    limits = _limits(bench, phase.electroporator)
    out: list[Problem] = []
    for field, value, span, unit in (
        ("voltage_v", phase.voltage_v, limits.voltage_v, "V"),
        ("pulse_width_us", phase.pulse_width_us, limits.pulse_width_us, "µs"),
        ("pulse_count", phase.pulse_count, limits.pulse_count, "pulses"),
        ("chamber_ul", phase.chamber_ul, limits.chamber_ul, "µL"),
        ("gap_mm", phase.gap_mm, limits.gap_mm, "mm"),
    ):
        if _outside(value, span):
            out.append(
                src.problem(
                    [*loc, field],
                    f"{field} {value:g} {unit} is outside {phase.electroporator}'s range "
                    f"{span[0]:g}-{span[1]:g} {unit}",
                )
            )
    return out + _fits_the_bag(src, bench, phase, loc, "electroporating")


class _BagTotals:
    """The volume each bag holds by the recipe's own add phases, in order: what the twin's
    inoculum starts it with (a real bag's is not known before the batch: none counted),
    plus every addition since its last harvest. Each phase alone may fit the bag while
    the second of two 900 mL additions to a 1,000 mL bag can never go in: the device
    refuses it mid-batch and the batch holds. Refused before it starts instead. Feeds are
    decided on samples (none may be needed) and withdrawals are small: not counted."""

    def __init__(self, bench: LoadedBench) -> None:
        self.bench = bench
        twin = bench.model.twin
        self.start = twin.inoculum.volume_ml if twin is not None else 0.0
        self.held: dict[str, float] = {}

    def after(self, src: Any, phase: Any, loc: list[Any]) -> list[Problem]:
        if isinstance(phase, Harvest):
            self.held[phase.bioreactor] = 0.0  # drained to the product bag
            return []
        if not isinstance(phase, AddMaterial):
            return []
        before = self.held.get(phase.bioreactor, self.start)
        total = before + phase.planned_ml
        self.held[phase.bioreactor] = total
        top = _limits(self.bench, phase.bioreactor).working_volume_ml[1]
        if total <= top or phase.planned_ml > top:  # (one too large alone is said already)
            return []
        field = "volume_ml" if phase.volume_ml is not None else "max_volume_ml"
        start = " (the twin's inoculum and" if self.start and before > 0 else " ("
        return [
            src.problem(
                [*loc, field],
                f"adding {phase.planned_ml:g} mL brings {phase.bioreactor} to {total:g} mL"
                f"{start} the additions before it), over its working volume of {top:g} mL",
            )
        ]


def _fits_the_bag(
    src: Any, bench: LoadedBench, phase: Any, loc: list[Any], doing: str
) -> list[Problem]:
    """A phase's ``volume_ml`` within its bioreactor's working volume."""
    top = _limits(bench, phase.bioreactor).working_volume_ml[1]
    volume = getattr(phase, "planned_ml", phase.volume_ml)  # an MOI dose: its ceiling
    if volume <= top:
        return []
    field = "volume_ml" if phase.volume_ml is not None else "max_volume_ml"
    return [
        src.problem(
            [*loc, field],
            f"{doing} {volume:g} mL exceeds {phase.bioreactor}'s working volume of {top:g} mL",
        )
    ]
