"""The phase library: the logic behind each phase type a recipe may name.

A phase object keeps its own progress (what it has done, when it ends), so
that after a hold and restart ``run`` continues where it was instead of
starting over: a dose is never given twice, a 24 h culture stays 24 h.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from twin.engine.context import (
    BatchContext,
    Transfer,
    as_record,
    as_recorded,
    journal_answer,
)
from twin.engine.modules import PerfusionLoop, PHLoop
from twin.equipment import CellSample, Gas, Material, PulseProgram
from twin.errors import PocTwinError
from twin.recipe import phases as p
from twin.recipe.monitors import Monitor

__all__ = ["PHASES", "PhaseFailed", "PhaseLogic", "make_phase"]

HOUR = 3600.0
#: Smallest rest of a dose cut short worth dosing after a restart (mL): below an addition
#: pump's resolution, what is left is taken as dosed.
MIN_DOSE_ML = 0.01


def rest_of(ctx: BatchContext, done: Transfer | None) -> tuple[float, dict[str, Any]] | None:
    """The rest of a dose a hold cut short, by the pump's total, and its basis (the setpoint
    it completes); None if there is none to give: confirmed whole, below a pump's
    resolution, or its total could not be read (that failure is in the record, and a person
    checks the bag)."""
    if done is None or done.delivered_ml is None or done.requested_ml is None:
        return None
    rest = round(done.requested_ml - done.delivered_ml, 2)
    if rest < MIN_DOSE_ML:
        return None
    basis = {
        "rest_of_ml": done.requested_ml,
        "delivered_ml": done.delivered_ml,
        "setpoint": ctx.journal.as_written(done.setpoint).seq,
    }
    return rest, basis


class PhaseFailed(PocTwinError):
    """The phase could not reach its goal (an in-process check missed, a setpoint not reached)."""


class PhaseLogic(ABC):
    """Base of every phase: ``run`` is resumable; ``describe`` is the one-line summary."""

    params: Any

    def __init__(self, params: Any) -> None:
        self.params = params

    @property
    def label(self) -> str:
        return self.params.name or self.params.phase

    @property
    def monitors(self) -> list[Monitor]:
        """Alarms active while this phase runs."""
        return list(self.params.monitors)

    @property
    def on_failure(self) -> str:
        """How far a failure of this phase propagates."""
        return str(self.params.on_failure)

    @property
    def equipment(self) -> list[str]:
        """The equipment items this phase drives (what a phase-level hold makes safe)."""
        return [
            getattr(self.params, f)
            for f in ("bioreactor", "gas_dispenser", "electroporator")
            if getattr(self.params, f, None)
        ]

    def describe(self) -> str:
        return self.label

    @abstractmethod
    async def run(self, ctx: BatchContext) -> None:
        """Do (or continue) the phase's work; return when its logic finishes."""


class SetTemperature(PhaseLogic):
    params: p.SetTemperature

    def describe(self) -> str:
        return f"temperature to {self.params.setpoint_c:g} °C"

    async def run(self, ctx: BatchContext) -> None:
        pr = self.params
        br = ctx.bioreactor(pr.bioreactor)
        await ctx.write(
            pr.bioreactor,
            "temperature_sp",
            pr.setpoint_c,
            lambda: br.set_temperature(pr.setpoint_c),
            unit="°C",
        )
        deadline = ctx.clock.now() + pr.timeout_min * 60
        while True:
            await ctx.safe_point()
            pv = await ctx.read(pr.bioreactor, "pv", br.read)
            if abs(pv.temperature_c - pr.setpoint_c) <= pr.tolerance_c:
                return
            if ctx.clock.now() >= deadline:
                raise PhaseFailed(
                    f"{pr.bioreactor}: temperature {pv.temperature_c:.2f} °C did not reach "
                    f"{pr.setpoint_c:g} ± {pr.tolerance_c:g} °C within {pr.timeout_min:g} min"
                )
            await ctx.clock.sleep(30.0)


class SetGas(PhaseLogic):
    params: p.SetGas

    def describe(self) -> str:
        return "gas " + ", ".join(f"{g} {f:g} sccm" for g, f in self.params.flows_sccm.items())

    async def run(self, ctx: BatchContext) -> None:
        pr = self.params
        gd = ctx.gas_dispenser(pr.gas_dispenser)
        for name, sccm in pr.flows_sccm.items():
            gas = Gas[name.upper()]
            ctx.control.manual(pr.gas_dispenser, gas)
            await ctx.write(
                pr.gas_dispenser,
                f"{name}_flow_sp",
                sccm,
                lambda g=gas, f=sccm: gd.set_flow(g, f),
                unit="sccm",
            )


class SetRocking(PhaseLogic):
    params: p.SetRocking

    def describe(self) -> str:
        return f"rocking {self.params.rpm:g} rpm"

    async def run(self, ctx: BatchContext) -> None:
        pr = self.params
        br = ctx.bioreactor(pr.bioreactor)
        await ctx.write(
            pr.bioreactor, "rocking_sp", pr.rpm, lambda: br.set_rocking(pr.rpm), unit="rpm"
        )


class AddMaterial(PhaseLogic):
    """A charge: the material dosed to its volume. A hold or abort that cuts the dose short
    stops the pump (the record says what went in); a restart doses the rest."""

    params: p.AddMaterial
    dosed: bool = False
    #: The lot the operator's scan showed (scanned once: a hold after it keeps it).
    scanned_lot: str | None = None
    #: The last dose written (the whole volume, or after a hold the rest of it).
    addition: Transfer | None = None

    def describe(self) -> str:
        pr = self.params
        if pr.moi is not None:
            return f"add {pr.material} at MOI {pr.moi:g} (titre {pr.titre:.3g} TU/mL)"
        return f"add {pr.volume_ml:g} mL {pr.material}"

    async def run(self, ctx: BatchContext) -> None:
        if self.dosed:
            await self._rest(ctx)
            return
        pr = self.params
        expected = pr.lot or ctx.expected_lots.get(pr.material)
        if pr.scan_lot and self.scanned_lot is None:
            self.scanned_lot = (await ctx.lots.wait(pr.material, expected)).lot
        volume, basis = await self._volume(ctx)
        await ctx.safe_point()  # a hold, stop or abort accepted by now: nothing is dosed
        await self._dose(ctx, volume, basis)

    async def _rest(self, ctx: BatchContext) -> None:
        """Restarted after a hold cut the dose short: the rest of it, by the pump's total
        (none if the dose was confirmed whole, or its total could not be read: that
        failure is in the record, and a person checks the bag)."""
        rest = rest_of(ctx, self.addition)
        if rest is None:
            return
        await ctx.safe_point()
        await self._dose(ctx, *rest)

    async def _dose(self, ctx: BatchContext, volume: float, basis: dict[str, Any] | None) -> None:
        pr = self.params
        br = ctx.bioreactor(pr.bioreactor)
        material = Material[pr.material.upper()]

        async def dose() -> Any:
            # Set as the write begins, once the interlocks let it and the setpoint is
            # journalled: after a hold mid-dose, never dose twice (the restart doses what
            # the pump had not: ``addition``, settled by the hold's drive); after a refusal
            # (no vector before the identity is confirmed), dose on restart.
            self.dosed = True
            self.addition = ctx.transfers.get(pr.bioreactor)
            return await br.add(material, volume)

        await ctx.write(
            pr.bioreactor,
            f"add_{pr.material}",
            volume,
            dose,
            unit="mL",
            restorable=False,
            basis=basis,
            lot=self.scanned_lot,
        )

    async def _volume(self, ctx: BatchContext) -> tuple[float, dict[str, Any] | None]:
        """The fixed volume, or MOI x the viable cells in the bag (last count x the volume
        now) / titre: refused above ``max_volume_ml`` or without a count to work from."""
        pr = self.params
        if pr.moi is None:
            return float(pr.volume_ml or 0.0), None
        sample = ctx.latest.get(f"{pr.bioreactor}.sample")
        if sample is None:
            raise PhaseFailed(
                f"{pr.bioreactor}: no cell count to dose the vector from (a sample phase or "
                "a culture's sample comes first)"
            )
        br = ctx.bioreactor(pr.bioreactor)
        pv = await ctx.read(pr.bioreactor, "pv", br.read)
        cells = sample.viable_cells_per_ml * pv.volume_ml
        titre = float(pr.titre or 0.0)
        volume = round(pr.moi * cells / titre, 2)
        basis = {
            "moi": pr.moi,
            "titre_tu_per_ml": titre,
            "viable_cells_per_ml": sample.viable_cells_per_ml,
            "volume_ml": pv.volume_ml,
            "viable_cells": cells,
        }
        if not 0.0 < volume <= float(pr.max_volume_ml or 0.0):
            raise PhaseFailed(
                f"{pr.bioreactor}: MOI {pr.moi:g} x {cells:.3g} viable cells / "
                f"{titre:.3g} TU/mL needs {volume:g} mL of vector, outside 0-"
                f"{pr.max_volume_ml:g} mL: nothing dosed"
            )
        return volume, basis


async def take_sample(
    ctx: BatchContext, bioreactor: str, qc: list[str] | None = None, name: str | None = None
) -> CellSample:
    """Draw and count a sample; journalled as an in-process result (with the QC tests the
    lab will run on it, whose results come later)."""
    br = ctx.bioreactor(bioreactor)
    sample = as_recorded(await br.sample())
    record = as_record(sample)
    if qc:
        record["qc_tests"] = list(qc)
    if name:
        record["name"] = name
    journal_answer(ctx.journal, "sample", bioreactor, "sample", record, record, durable=True)
    ctx.latest[f"{bioreactor}.sample"] = sample
    ctx.alarms.evaluate(bioreactor, record, ctx.clock.now())
    return sample


class Culture(PhaseLogic):
    """Hold conditions for a time: engages the unit's control loops, samples on schedule.

    Reading, monitors and the DO, pH and perfusion loops are the unit's control
    modules (:mod:`twin.engine.modules`), which go on in every procedural state; the
    phase sets their setpoints and counts its time. The phase's clock is time spent
    Running: a hold or pause does not count towards ``duration_h`` (as a batch
    system's phase timers pause when held).
    """

    params: p.Culture
    elapsed_s: float = 0.0
    samples_taken: int = 0
    #: Feeds given so far, per feed rule (at most its ``max_feeds``).
    fed: dict[int, int] | None = None
    #: The sample each feed rule last fed on (a rule feeds once per sample, even across a hold).
    fed_on: dict[int, int] | None = None
    #: Samples whose decisions (feeds, target) were all made: one cut short by a hold is
    #: decided again after the restart, from the same journalled sample.
    decided: int = 0
    #: Whether a sample showed the target reached (the culture ends early).
    reached: bool = False
    #: The last feed written (a bolus, or after a hold the rest of it) and its rule's
    #: number: one a hold cut short is topped up after the restart.
    feeding: tuple[Transfer, int] | None = None

    def describe(self) -> str:
        pr = self.params
        extra = f", DO {pr.do_setpoint_pct:g}%" if pr.do_setpoint_pct is not None else ""
        return f"culture {pr.duration_h:g} h{extra}"

    def engage(self, ctx: BatchContext) -> None:
        """Hand the culture's setpoints to the unit's control modules."""
        pr = self.params
        control = ctx.control
        control.period_s = pr.poll_s
        if pr.do_setpoint_pct is not None:
            control.engage_do(pr.bioreactor, pr.gas_dispenser, pr.do_setpoint_pct)
        if pr.ph_setpoint is not None:
            control.engage_ph(
                PHLoop(
                    pr.bioreactor,
                    pr.gas_dispenser,
                    pr.ph_setpoint,
                    pr.ph_deadband,
                    pr.base_dose_ml,
                    pr.base_interval_h * HOUR,
                )
            )
        if pr.perfusion is not None:
            steps = [(pr.perfusion.start_at_cells_per_ml, pr.perfusion.volumes_per_day)]
            steps += [(s.at_cells_per_ml, s.volumes_per_day) for s in pr.perfusion.ramp]
            control.engage_perfusion(PerfusionLoop(pr.bioreactor, steps))

    async def run(self, ctx: BatchContext) -> None:
        pr = self.params
        duration = pr.duration_h * HOUR
        if self.elapsed_s == 0.0:
            for loop, value, unit in (
                ("do_sp", pr.do_setpoint_pct, "%"),
                ("ph_sp", pr.ph_setpoint, ""),
            ):
                if value is not None:  # the control loop's setpoint, for trends and the record
                    ctx.journal.append(
                        "setpoint",
                        pr.bioreactor,
                        {"parameter": loop, "value": value, "unit": unit, "control_loop": True},
                    )
            self.engage(ctx)
        woken = False  # the last wait was cut short by a change with no time passing
        while self.elapsed_s < duration and not self.reached:
            await ctx.safe_point()
            if self.feeding is not None:
                await self._feed_rest(ctx)  # a hold cut the last feed short
            latest = ctx.latest.get(f"{pr.bioreactor}.sample")
            if self.decided < self.samples_taken and latest is not None:
                await self._decide(ctx, latest)  # a hold cut this sample's decisions short
                if self.reached:
                    break
            started = ctx.clock.now()
            if (
                pr.sample_every_h
                and self.elapsed_s >= (self.samples_taken + 1) * pr.sample_every_h * HOUR
            ):
                self.samples_taken += 1  # first: after a hold mid-sample, not drawn twice
                sample = await take_sample(ctx, pr.bioreactor)
                await self._decide(ctx, sample)
                if self.reached:
                    break
                # A command that came while the sample was taken is met here; a pause
                # there is no culture time.
                before = ctx.clock.now()
                await ctx.safe_point()
                started += ctx.clock.now() - before
            # Nothing to do until the next sample or the end: the control modules keep the
            # culture; a command wakes the wait (a pause or stop meets the safe point above).
            goal = duration
            if pr.sample_every_h:
                goal = min(goal, (self.samples_taken + 1) * pr.sample_every_h * HOUR)
            span, reached = goal - self.elapsed_s, False
            try:
                if woken:  # woken without time passing: minute steps (no spin on a change)
                    span = min(span, pr.poll_s)
                    await ctx.clock.sleep_until(started + span)
                    reached = True
                else:
                    reached = await ctx.wait_until(started + span)
            finally:  # a hold cancels the wait: the culture time until then still counts
                ran = ctx.clock.now() - started
                if not reached:
                    self.elapsed_s += ran
                elif span == goal - self.elapsed_s:
                    self.elapsed_s = goal  # exactly: sample times land on their hours
                else:
                    self.elapsed_s += span
            woken = not reached and ran <= 0.0
        ctx.control.disarm_perfusion(pr.bioreactor)

    async def _feed(
        self,
        ctx: BatchContext,
        rule: int,
        material: Material,
        volume: float,
        basis: dict[str, Any],
    ) -> None:
        """Dose a feed (or the rest of one), keeping its transfer for a top-up."""
        pr = self.params
        br = ctx.bioreactor(pr.bioreactor)

        async def dose() -> Any:
            transfer = ctx.transfers.get(pr.bioreactor)
            self.feeding = (transfer, rule) if transfer is not None else None
            return await br.add(material, volume)

        await ctx.write(
            pr.bioreactor,
            f"add_{material.name.lower()}",
            volume,
            dose,
            unit="mL",
            restorable=False,
            basis=basis,
        )
        self.feeding = None  # dosed whole

    async def _feed_rest(self, ctx: BatchContext) -> None:
        """Restarted after a hold cut a feed short: the rest of it, by the pump's total (none
        if its total could not be read: that failure is in the record, a person checks)."""
        assert self.feeding is not None
        done, rule = self.feeding
        rest = rest_of(ctx, done)
        if rest is None:
            self.feeding = None
            return
        volume, basis = rest
        material = Material[done.parameter.removeprefix("add_").upper()]
        await self._feed(ctx, rule, material, volume, {"feed": rule + 1, **basis})

    async def _decide(self, ctx: BatchContext, sample: CellSample) -> None:
        """What a scheduled sample decides: feeds (by glucose or density) and the target."""
        pr = self.params
        br = ctx.bioreactor(pr.bioreactor)
        fed = self.fed if self.fed is not None else {}
        fed_on = self.fed_on if self.fed_on is not None else {}
        self.fed, self.fed_on = fed, fed_on
        for k, feed in enumerate(pr.feeds):
            due = (
                feed.when_glucose_below is not None and sample.glucose_mm < feed.when_glucose_below
            ) or (
                feed.when_cells_per_ml_above is not None
                and sample.viable_cells_per_ml > feed.when_cells_per_ml_above
            )
            if not due or fed.get(k, 0) >= feed.max_feeds or fed_on.get(k) == self.samples_taken:
                continue
            if not ctx.control.additions:
                return  # a hold came with this sample (its alarm): decided after the restart
            fed[k] = fed.get(k, 0) + 1  # first: after a hold mid-feed, not fed twice
            fed_on[k] = self.samples_taken
            material = Material[feed.material.upper()]
            why = (
                {"glucose_mm": sample.glucose_mm, "below": feed.when_glucose_below}
                if feed.when_glucose_below is not None
                else {
                    "viable_cells_per_ml": sample.viable_cells_per_ml,
                    "above": feed.when_cells_per_ml_above,
                }
            )
            await self._feed(ctx, k, material, feed.volume_ml, {"feed": k + 1, **why})
        if pr.target is None or self.elapsed_s < pr.target.not_before_h * HOUR:
            self.decided = self.samples_taken  # no target, or too early to judge it
            return
        pv = await ctx.read(pr.bioreactor, "pv", br.read)
        needed, car_only = pr.target.cells_needed()
        cells = sample.viable_cells_per_ml * pv.volume_ml
        have = cells * sample.transduced_pct / 100.0 if car_only else cells
        self.decided = self.samples_taken
        if have >= needed:
            self.reached = True
            ctx.journal.append(
                "target_reached",
                pr.bioreactor,
                {
                    "cells": have,
                    "needed": needed,
                    "car_positive": car_only,
                    "culture_h": self.elapsed_s / HOUR,
                    "of_h": pr.duration_h,
                },
            )


class SampleCheck(PhaseLogic):
    params: p.SampleCheck

    def describe(self) -> str:
        return self.params.name or "sample"

    async def run(self, ctx: BatchContext) -> None:
        pr = self.params
        sample = await take_sample(ctx, pr.bioreactor, pr.qc, pr.name)
        misses = []
        if pr.min_viability_pct is not None and sample.viability_pct < pr.min_viability_pct:
            misses.append(f"viability {sample.viability_pct:.1f}% < {pr.min_viability_pct:g}%")
        if (
            pr.min_viable_cells_per_ml is not None
            and sample.viable_cells_per_ml < pr.min_viable_cells_per_ml
        ):
            misses.append(
                f"viable cells {sample.viable_cells_per_ml:.3g}/mL < "
                f"{pr.min_viable_cells_per_ml:.3g}/mL"
            )
        if misses:
            raise PhaseFailed(f"in-process check failed: {'; '.join(misses)}")


class MediaExchange(PhaseLogic):
    """Run the perfusion line fast for as long as the volume takes, then restore its rate."""

    params: p.MediaExchange
    exchanged_ml: float = 0.0
    previous_ml_per_day: float | None = None

    def describe(self) -> str:
        return f"media exchange {self.params.volume_ml:g} mL"

    async def run(self, ctx: BatchContext) -> None:
        pr = self.params
        br = ctx.bioreactor(pr.bioreactor)
        if self.previous_ml_per_day is None:
            pv = await ctx.read(pr.bioreactor, "pv", br.read)
            self.previous_ml_per_day = pv.perfusion_ml_per_day
        await ctx.safe_point()  # not begun once a hold, stop or abort is accepted
        rate = pr.rate_ml_per_h * 24.0
        await ctx.write(
            pr.bioreactor, "perfusion_sp", rate, lambda: br.set_perfusion(rate), unit="mL/d"
        )
        while self.exchanged_ml < pr.volume_ml - 1e-9:
            if ctx.pausing():
                # A pause stops the exchange: the line goes back to its rate before it until
                # the batch resumes. Before, it ran on at the exchange rate through the pause,
                # uncounted (80.8 mL exchanged of 80 mL asked after a 49-minute pause).
                await ctx.write(
                    pr.bioreactor, "perfusion_sp", self.previous_ml_per_day,
                    lambda: br.set_perfusion(self.previous_ml_per_day), unit="mL/d",
                )  # fmt: skip
                await ctx.safe_point()
                await ctx.write(
                    pr.bioreactor, "perfusion_sp", rate, lambda: br.set_perfusion(rate), unit="mL/d"
                )
            await ctx.safe_point()
            step_h = min(60.0 / 3600.0, (pr.volume_ml - self.exchanged_ml) / pr.rate_ml_per_h)
            await ctx.clock.sleep(step_h * HOUR)
            self.exchanged_ml += step_h * pr.rate_ml_per_h
            await ctx.read(pr.bioreactor, "pv", br.read)
        previous = self.previous_ml_per_day
        await ctx.write(
            pr.bioreactor, "perfusion_sp", previous, lambda: br.set_perfusion(previous), unit="mL/d"
        )


class Wait(PhaseLogic):
    """Wait for a time (Running time only) or until a process value crosses a threshold."""

    params: p.Wait
    elapsed_s: float = 0.0

    def describe(self) -> str:
        pr = self.params
        if pr.until is not None:
            op, value = (
                ("above", pr.until.above)
                if pr.until.above is not None
                else ("below", pr.until.below)
            )
            return f"wait until {pr.until.pv} {op} {value:g}"
        return f"wait {pr.duration_h:g} h"

    async def run(self, ctx: BatchContext) -> None:
        pr = self.params
        br = ctx.bioreactor(pr.bioreactor)
        limit = (pr.duration_h if pr.duration_h is not None else pr.timeout_h) * HOUR
        while True:
            await ctx.safe_point()
            started = ctx.clock.now()
            pv = await ctx.read(pr.bioreactor, "pv", br.read)
            if pr.until is not None and pr.until.met(float(getattr(pv, pr.until.pv))):
                return
            if self.elapsed_s >= limit:
                if pr.until is None:
                    return
                raise PhaseFailed(f"{self.describe()}: not reached within {pr.timeout_h:g} h")
            step = min(pr.poll_s, limit - self.elapsed_s) or pr.poll_s
            # Up to 600 s between checks: a command wakes the wait (a pause or controlled
            # stop meets the safe point above within the unit's poll, as in a culture).
            reached = False
            try:
                reached = await ctx.wait_until(started + step)
            finally:  # a hold cancels the wait: the Running time until then still counts
                self.elapsed_s += step if reached else ctx.clock.now() - started


class ConfirmIdentity(PhaseLogic):
    """Wait for an operator's scan; a match confirms the chain of identity, a mismatch fails."""

    params: p.ConfirmIdentity

    def describe(self) -> str:
        return "confirm chain of identity"

    async def run(self, ctx: BatchContext) -> None:
        ordered = ctx.ordered_identity
        if ordered is None:
            raise PhaseFailed("the batch was started without --patient-id and --bag-id")
        if ctx.identity == ordered:
            return
        if not ctx.scan_recorded_for(self):  # else: taken just before a hold, recorded
            ctx.want_identity(self)
            ctx.journal.append(
                "identity_requested", "batch", {"patient_id": ordered[0], "bag_id": ordered[1]}
            )
        patient, bag, match = await ctx.next_scan()  # journalled as it was accepted
        if not match:
            raise PhaseFailed(
                f"identity mismatch: scanned patient {patient} / bag {bag}, "
                f"batch is for patient {ordered[0]} / bag {ordered[1]}"
            )
        ctx.identity = ordered


class Electroporate(PhaseLogic):
    """Portion by portion: load the chamber from the bag, program, pulse, empty it into the
    recovery bag; then return the recovery bag to the culture at once, so that every portion
    is fresh culture and no cell is pulsed twice.

    A hold may cut a portion short anywhere: the portion's stage says what to do after the
    restart. Loaded but never fired: it is pulsed as planned. Fired (or a pulse that may have
    gone out): it is emptied and counted, never pulsed again.
    """

    params: p.Electroporate
    done_ml: float = 0.0
    recovered: bool = False
    #: The portion in progress: "" (none), "loading", "loaded", "pulsing", "pulsed".
    stage: str = ""
    portion_ul: float = 0.0

    def describe(self) -> str:
        pr = self.params
        return f"electroporate {pr.volume_ml:g} mL at {pr.voltage_v:g} V / {pr.gap_mm:g} mm"

    async def run(self, ctx: BatchContext) -> None:
        pr = self.params
        ep = ctx.electroporator(pr.electroporator)
        program = PulseProgram(pr.voltage_v, pr.pulse_width_us, pr.pulse_count, pr.gap_mm)
        await ctx.write(
            pr.electroporator, "program", program, lambda: ep.program(program), restorable=False
        )
        status = await ctx.read(pr.electroporator, "status", ep.status)
        if status.loaded_ul > 0:  # a portion left in the chamber by a hold
            if self.stage in ("loading", "loaded"):
                await self._pulse(ctx)  # never fired: pulse it as planned
            await self._empty(ctx, status.loaded_ul)
        elif self.stage in ("pulsing", "pulsed"):  # fired and emptied before the hold bit
            self._count(self.portion_ul)
        while self.done_ml < pr.volume_ml - 1e-9:
            await ctx.safe_point()
            portion_ul = min(pr.chamber_ul, (pr.volume_ml - self.done_ml) * 1000.0)
            self.stage, self.portion_ul = "loading", portion_ul
            await ctx.write(
                pr.electroporator,
                "load",
                portion_ul,
                lambda v=portion_ul: ep.load(v),
                unit="uL",
                restorable=False,
            )
            self.stage = "loaded"
            await self._pulse(ctx)
            await self._empty(ctx, portion_ul)
        if not self.recovered:  # RECOVER is idempotent: after a failed one, simply again
            await ctx.write(pr.electroporator, "recover", True, ep.recover, restorable=False)
            self.recovered = True

    async def _pulse(self, ctx: BatchContext) -> None:
        pr = self.params
        ep = ctx.electroporator(pr.electroporator)

        async def fire() -> Any:
            # As the pulse goes out (the write's interlocks passed, no hold or abort came):
            # a pulse that may have gone out is never repeated, one never sent is fired.
            self.stage = "pulsing"
            return await ep.pulse()

        result = await ctx.write(pr.electroporator, "pulse", True, fire, restorable=False)
        self.stage = "pulsed"
        ctx.journal.append("pulse", pr.electroporator, as_record(result))

    async def _empty(self, ctx: BatchContext, portion_ul: float) -> None:
        pr = self.params
        ep = ctx.electroporator(pr.electroporator)
        await ctx.write(pr.electroporator, "unload", True, ep.unload, restorable=False)
        self._count(portion_ul)

    def _count(self, portion_ul: float) -> None:
        self.done_ml += portion_ul / 1000.0
        self.stage = ""


class Harvest(PhaseLogic):
    """Perfusion off, control handed over, a final count, then the bag is harvested.

    A hold, stop or abort accepted before the harvest begins keeps the bag in the
    bioreactor (a safe point comes first); the final count, once drawn, is the harvest's
    (a restart does not draw a second sample from the bag).
    """

    params: p.Harvest
    harvested: bool = False
    final: CellSample | None = None
    #: The last harvest written, until its volume is journalled: one a hold cut short.
    pump: Transfer | None = None
    #: What harvests cut short drained into the product bag before the last one (mL).
    drained_ml: float = 0.0
    #: A harvest cut short whose pump total could not be read: the volume is too low.
    drained_unknown: bool = False

    async def run(self, ctx: BatchContext) -> None:
        pr = self.params
        br = ctx.bioreactor(pr.bioreactor)
        if self.harvested:
            if self.pump is not None:  # a hold cut the harvest short: drain the rest
                await self._rest(ctx)
            return
        await ctx.safe_point()
        await ctx.write(
            pr.bioreactor, "perfusion_sp", 0.0, lambda: br.set_perfusion(0.0), unit="mL/d"
        )
        ctx.forget(pr.bioreactor, "perfusion_sp")
        ctx.control.disengage(pr.bioreactor)
        if self.final is None:
            self.final = await take_sample(ctx, pr.bioreactor)
        await ctx.safe_point()

        async def harvest_bag() -> float:
            self.harvested = True  # as the harvest goes out: never twice
            self.pump = ctx.transfers.get(pr.bioreactor)
            return await br.harvest()

        volume = await ctx.write(pr.bioreactor, "harvest", True, harvest_bag, restorable=False)
        self._record(ctx, volume)

    async def _rest(self, ctx: BatchContext) -> None:
        """Restarted after a hold cut the harvest short: what it drained is in the product
        bag (the pump's total, journalled with the hold); the rest of the bag follows it,
        and the harvest is the two together."""
        pr = self.params
        br = ctx.bioreactor(pr.bioreactor)
        cut = self.pump
        assert cut is not None
        drained = self.drained_ml + (cut.delivered_ml or 0.0)
        await ctx.safe_point()

        unknown = self.drained_unknown or cut.delivered_ml is None

        async def harvest_rest() -> float:
            self.drained_ml, self.pump = drained, ctx.transfers.get(pr.bioreactor)
            self.drained_unknown = unknown
            return await br.harvest()

        rest = await ctx.write(
            pr.bioreactor,
            "harvest",
            True,
            harvest_rest,
            restorable=False,
            basis={"drained_ml": drained, "setpoint": ctx.journal.as_written(cut.setpoint).seq},
        )
        self._record(ctx, self.drained_ml + rest)

    def _record(self, ctx: BatchContext, volume: float) -> None:
        """The harvest as the product bag holds it, counted by the final sample."""
        pr, final = self.params, self.final
        assert final is not None
        self.pump = None
        harvest = {
            "volume_ml": round(volume, 3),
            "viable_cells": round(final.viable_cells_per_ml * volume, 0),
            "viable_cells_per_ml": final.viable_cells_per_ml,
            "viability_pct": final.viability_pct,
            "transduced_pct": final.transduced_pct,
        }
        if self.drained_ml or self.drained_unknown:
            harvest["drained_before_ml"] = round(self.drained_ml, 3)
        if self.drained_unknown:  # its harvest_interrupted event says so too
            harvest["drained_before_unknown"] = True
        ctx.latest[f"{pr.bioreactor}.harvest"] = harvest  # what a formulation draws from
        ctx.journal.append("harvest", pr.bioreactor, harvest)


class Formulate(PhaseLogic):
    """The dose for this patient from the harvest: how much of it holds the dose, resuspended
    in the infusion bag's volume; the rest is kept (QC retains, a second dose).

    The twin has no cell-processing device: the phase works out and journals what the
    operator (or a formulation device) does, from the journalled harvest, and refuses a
    harvest that cannot give the dose."""

    params: p.Formulate

    def describe(self) -> str:
        pr = self.params
        return f"formulate {pr.dose_per_kg:.3g} CAR+ cells/kg x {pr.patient_weight:g} kg"

    async def run(self, ctx: BatchContext) -> None:
        pr = self.params
        harvest = ctx.latest.get(f"{pr.bioreactor}.harvest")
        if harvest is None:
            raise PhaseFailed(f"{pr.bioreactor}: no harvest to formulate from (harvest first)")
        viable_per_ml = float(harvest["viable_cells_per_ml"])
        car_per_ml = viable_per_ml * float(harvest["transduced_pct"]) / 100.0
        dose = float(pr.dose_per_kg) * float(pr.patient_weight)
        volume = float(harvest["volume_ml"])
        in_harvest = car_per_ml * volume
        if in_harvest < dose:
            raise PhaseFailed(
                f"the harvest holds {in_harvest:.3g} CAR+ viable cells, the dose "
                f"({pr.dose_per_kg:.3g}/kg x {pr.patient_weight:g} kg) needs {dose:.3g}: "
                "not formulated"
            )
        draw_ml = dose / car_per_ml
        cells = draw_ml * viable_per_ml
        density = cells / float(pr.final_volume_ml)
        if density > float(pr.max_cells_per_ml):
            raise PhaseFailed(
                f"the dose comes with {cells:.3g} viable cells: {density:.3g}/mL in "
                f"{pr.final_volume_ml:g} mL, above {pr.max_cells_per_ml:.3g}/mL: not formulated"
            )
        ctx.journal.append(
            "formulation",
            pr.bioreactor,
            {
                "dose_car_positive_cells": round(dose, 0),
                "dose_per_kg": float(pr.dose_per_kg),
                "patient_weight_kg": float(pr.patient_weight),
                "harvest_drawn_ml": round(draw_ml, 2),
                "final_volume_ml": float(pr.final_volume_ml),
                "viable_cells": round(cells, 0),
                "viable_cells_per_ml": round(density, 0),
                "viability_pct": harvest["viability_pct"],
                "doses_in_harvest": round(in_harvest / dose, 2),
                "retained_ml": round(volume - draw_ml, 2),
            },
        )


PHASES: dict[str, Callable[[Any], PhaseLogic]] = {
    "set_temperature": SetTemperature,
    "set_gas": SetGas,
    "set_rocking": SetRocking,
    "add": AddMaterial,
    "culture": Culture,
    "sample": SampleCheck,
    "wait": Wait,
    "media_exchange": MediaExchange,
    "confirm_identity": ConfirmIdentity,
    "formulate": Formulate,
    "electroporate": Electroporate,
    "harvest": Harvest,
}


def make_phase(params: Any) -> PhaseLogic:
    """Phase logic for one recipe phase; the registry is the only place phase types are named."""
    return PHASES[params.phase](params)
