"""One batch of an ensemble: its plan (what is drawn for it) and its outcome.

A member runs the real engine and recipe against the twin's devices through the
bench file it is given (``benches/sim-in-process.yaml`` by default: null modems,
the journal in memory), exactly as ``poc-twin run`` would, and reads its outcome
from the journal's events. Only what no sensor measures during a batch (vector
copies, CD4 share) comes from the twin's own harvest record, as a QC lab would
report it; those outcomes are labelled "twin QC".

Nobody stands at an ensemble batch, so a scripted operator does what the recipe
waits for: it scans the bag's identity and each material container (the lot the
batch expects, or ``twin-MATERIAL``: the twin's simulated person at the bag,
:mod:`twin.sim.bedside`) ``scan_delay_min`` after the batch asks,
and restarts a batch an alarm held ``hold_response_min`` after the hold (as for a
transient excursion; the outcome counts the holds), up to ``MAX_RESTARTS`` times,
then aborts it. A batch still running at ``max_days`` is aborted; neither is released.
Plans and outcomes are plain dicts, so they travel to Dask workers and back.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twin.bench import LoadedBench, load_bench
from twin.clock import Clock, run_batch_loop
from twin.engine.states import Command
from twin.ensemble.vary import Variation
from twin.journal import Event
from twin.recipe import LoadedRecipe, load_recipe
from twin.report.record import recipe_phases
from twin.runner import run_batch_async
from twin.sim.bedside import BedsideOperator
from twin.sim.donor import draw_donor

__all__ = ["MemberPlan", "plan_members", "run_member", "sample_row"]

DAY = 86400.0
#: Events an outcome is read from (readings are not kept: an ensemble keeps no trends; its
#: samples are kept, for forecasts to compare a running batch's samples with).
_KEPT = frozenset({"batch_started", "harvest", "transition", "alarm", "batch_ended", "sample"})
#: Restarts the scripted operator gives one batch before it aborts it.
MAX_RESTARTS = 3


@dataclass(frozen=True)
class MemberPlan:
    """Everything that makes batch ``index`` of an ensemble what it is."""

    index: int
    recipe: str  # path
    bench: str  # path
    seed: int  # sensor noise
    donor_seed: int
    parameters: dict[str, str] = field(default_factory=dict)  # recipe parameters drawn
    donor: dict[str, float] = field(default_factory=dict)  # donor traits drawn (overrides)
    inoculum: dict[str, float] = field(default_factory=dict)
    scan_delay_min: float = 15.0
    max_days: float = 30.0
    hold_response_min: float = 60.0

    def as_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_members(
    *,
    recipe: str,
    bench: str,
    batches: int,
    base_seed: int,
    variations: list[Variation],
    scan_delay_min: float = 15.0,
    max_days: float = 30.0,
    hold_response_min: float = 60.0,
) -> list[MemberPlan]:
    """The plan of every batch: batch *i* gets seed and donor seed from ``base_seed`` and
    *i* alone, and its draws from its own generator (the same ensemble, the same batches)."""
    plans = []
    for i in range(batches):
        rng = random.Random(f"poc-twin whatif {base_seed} {i}")
        drawn: dict[str, dict[str, Any]] = {"parameter": {}, "donor": {}, "inoculum": {}}
        for v in variations:
            value = v.draw(rng)
            drawn[v.kind][v.key] = str(v.as_value(value)) if v.kind == "parameter" else value
        plans.append(
            MemberPlan(
                index=i,
                recipe=recipe,
                bench=bench,
                seed=rng.randrange(2**31),
                donor_seed=rng.randrange(2**31),
                parameters=drawn["parameter"],
                donor=drawn["donor"],
                inoculum=drawn["inoculum"],
                scan_delay_min=scan_delay_min,
                max_days=max_days,
                hold_response_min=hold_response_min,
            )
        )
    return plans


def _member_bench(bench: LoadedBench, plan: MemberPlan) -> LoadedBench:
    """The bench with this batch's seed, donor and inoculum."""
    twin = bench.model.twin
    if twin is None:
        raise ValueError(f"{bench.path}: an ensemble needs a bench with a twin section")
    donor = twin.donor.model_copy(update={"seed": plan.donor_seed, **plan.donor})
    inoculum = twin.inoculum.model_copy(update=plan.inoculum)
    twin = twin.model_copy(update={"seed": plan.seed, "donor": donor, "inoculum": inoculum})
    return dataclasses.replace(bench, model=bench.model.model_copy(update={"twin": twin}))


def _patient_weight(recipe: LoadedRecipe) -> float | None:
    for ph in recipe_phases(recipe.model).values():
        target = getattr(ph, "target", None)
        if target is not None and getattr(target, "patient_weight", None):
            return float(target.patient_weight)
    return None


class _Operator:
    """The scripted person of an ensemble batch: scans the identity and the material lots the
    batch asks for, restarts after a hold, and aborts a batch that runs past ``max_days``
    (it would never be released)."""

    def __init__(self, plan: MemberPlan) -> None:
        self.plan = plan
        self.batch: Any = None
        self.clock: Clock | None = None
        #: Who scans at the bag: the twin's simulated person, ``scan_delay_min`` after asked.
        self.bedside: BedsideOperator | None = None
        self.events: list[Event] = []
        self.plant: Any = None
        self.overran = False
        self.restarts = 0

    def on_bench(self, opened: Any, clock: Clock) -> None:
        self.clock = clock
        self.bedside = BedsideOperator(clock, self.plan.scan_delay_min * 60.0)
        self.bedside.attend(self.batch)
        self.plant = opened.twin.plant if opened.twin is not None else None
        clock.call_later(self.plan.max_days * DAY, self._overrun)

    def on_batch(self, batch: Any) -> None:
        self.batch = batch
        if self.bedside is not None:
            self.bedside.attend(batch)

    def hear(self, event: Event) -> None:
        if event.kind in _KEPT:
            self.events.append(event)
        if self.clock is None or self.bedside is None:
            return
        self.bedside.hear(event)
        if (
            event.kind == "transition"
            and event.source.startswith("procedure:")
            and event.data.get("to") == "Held"
        ):
            self.clock.call_later(self.plan.hold_response_min * 60.0, self._respond_to_hold)

    def _respond_to_hold(self) -> None:
        batch = self.batch
        if batch is None or batch.state.is_final or batch.state.label != "Held":
            return
        if self.restarts < MAX_RESTARTS and batch.procedure.can(Command.RESTART):
            self.restarts += 1
            batch.command(
                Command.RESTART, who="whatif", why="scripted operator: restart after the hold"
            )
        elif batch.procedure.can(Command.ABORT):
            batch.command(
                Command.ABORT, who="whatif", why=f"held again after {MAX_RESTARTS} restarts"
            )

    def _overrun(self) -> None:
        batch = self.batch
        if batch is not None and not batch.state.is_final and batch.procedure.can(Command.ABORT):
            self.overran = True
            batch.command(
                Command.ABORT, who="whatif", why=f"still running at day {self.plan.max_days:g}"
            )


def outcome_of(events: list[Event], plant: Any, patient_weight_kg: float | None) -> dict[str, Any]:
    """The outcomes of OUTCOMES (None where not reached), from the batch's events."""
    started = next((e.data for e in events if e.kind == "batch_started"), {})
    harvest_event = next((e for e in events if e.kind == "harvest"), None)
    ended = next((e for e in events if e.kind == "batch_ended"), None)
    state = str(ended.data.get("state")) if ended is not None else "not ended"
    out: dict[str, Any] = {k: None for k in _OUTCOME_KEYS}
    out["state"] = state
    out["end_day"] = (events[-1].batch_time / DAY) if events else None
    out["holds"] = sum(
        1
        for e in events
        if e.kind == "transition"
        and e.source.startswith("procedure:")
        and e.data.get("to") == "Holding"
    )
    out["alarms"] = sum(1 for e in events if e.kind == "alarm")
    reasons = [
        str(e.data.get("why", ""))
        for e in events
        if e.kind == "transition"
        and e.source.startswith("procedure:")
        and e.data.get("to") in ("Holding", "Aborting", "Stopping")
    ]
    out["why_held"] = list(dict.fromkeys(reasons))[:3]  # what a reviewer would ask first
    donor = (started.get("bench") or {}).get("donor") or {}
    out["donor"] = donor
    out["samples"] = [sample_row(e) for e in events if e.kind == "sample"]
    if harvest_event is None:
        return out
    h = harvest_event.data
    cells, car = h.get("viable_cells"), h.get("transduced_pct")
    seeded = started.get("seeded_viable_cells")
    out.update(
        viable_cells=cells,
        viability=h.get("viability_pct"),
        car_positive=car,
        volume=h.get("volume_ml"),
        duration=harvest_event.batch_time / DAY,
        fold_expansion=cells / seeded if cells and seeded else None,
    )
    if cells is not None and car is not None:
        out["car_viable_cells"] = cells * car / 100.0
        if patient_weight_kg:
            out["dose_per_kg"] = out["car_viable_cells"] / patient_weight_kg
    record = getattr(getattr(plant, "bioreactor", None), "harvested", None)
    if record is not None:
        out["vector_copies"] = round(float(record.vector_copies), 3)
        out["cd4_fraction"] = round(100.0 * float(record.cd4_fraction), 2)
    return out


def sample_row(event: Event) -> list[Any]:
    """A sample as a forecast library keeps it: [batch day, name, viable cells/mL,
    viability %, CAR+ %] (name "" for a culture's scheduled samples)."""
    d = event.data
    return [
        round(event.batch_time / DAY, 5),
        str(d.get("name", "")),
        d.get("viable_cells_per_ml"),
        d.get("viability_pct"),
        d.get("transduced_pct"),
    ]


_OUTCOME_KEYS = (
    "viable_cells",
    "viability",
    "car_positive",
    "car_viable_cells",
    "dose_per_kg",
    "fold_expansion",
    "volume",
    "duration",
    "vector_copies",
    "cd4_fraction",
)


def _content(path: str) -> str:
    """A file's content hash ("" if unreadable: the loader then says why)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


@functools.lru_cache(maxsize=16)
def _recipe(path: str, content: str, parameters: tuple[tuple[str, str], ...]) -> LoadedRecipe:
    """A recipe parsed once per content and parameters in a worker, not once per batch:
    parsing and checking it cost ~1 % of a ten-day batch. Loaded recipes are frozen."""
    return load_recipe(path, dict(parameters) or None)


@functools.lru_cache(maxsize=16)
def _bench(path: str, content: str) -> LoadedBench:
    """A bench file parsed once per content in a worker (each batch copies its twin part)."""
    return load_bench(path)


def run_member(
    plan: MemberPlan, *, subscribers: list[Callable[[Event], None]] | None = None
) -> dict[str, Any]:
    """Run batch ``plan.index`` to its end; its outcome with the plan it came from."""
    recipe = _recipe(plan.recipe, _content(plan.recipe), tuple(sorted(plan.parameters.items())))
    bench = _member_bench(_bench(plan.bench, _content(plan.bench)), plan)
    patient, bag = f"WHATIF-{plan.index}", f"BAG-{plan.index}"
    person = _Operator(plan)
    final = run_batch_loop(
        lambda: run_batch_async(
            recipe,
            bench,
            None,
            batch_id=f"whatif-{plan.index}",
            operator="whatif",
            patient_id=patient,
            bag_id=bag,
            subscribers=[person.hear, *(subscribers or [])],
            on_bench=person.on_bench,
            on_batch=person.on_batch,
        ),
        virtual=bench.virtual_clock,
        pace=None,
    )
    outcome = outcome_of(person.events, person.plant, _patient_weight(recipe))
    outcome["state"] = final.label
    outcome["overran"] = person.overran
    outcome["restarts"] = person.restarts
    if not outcome["donor"]:
        outcome["donor"] = draw_donor(plan.donor_seed).as_record()
    return {"plan": plan.as_record(), "outcome": outcome}
