"""Square-wave electroporator with a chamber filled from, and emptied back into, the bag.

Field E = V/d. Cargo delivery is a sigmoid of E around E50 = Vc/(1.5 r), the field
at which the induced transmembrane voltage 1.5*E*r reaches a critical value
(Kotnik & Miklavcic 2000); killing is a second sigmoid at a higher field
(TWIN_MODELS.md). Longer or more pulses lower both thresholds (strength-duration,
assumed exponent). Peak current is V/R with R = d/(sigma*A) for a parallel-plate
chamber of the loaded volume. Cells in the chamber neither grow nor die between
pulses: they stay there minutes, not hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from twin.equipment import PulseProgram
from twin.sim.bioreactor import BioreactorModel
from twin.sim.noise import sensor_rng
from twin.sim.params import ElectroporatorParams
from twin.sim.population import CellSuspension

__all__ = [
    "ElectroporatorModel",
    "PulseOutcome",
    "delivery_efficiency",
    "pulse_survival",
]


@dataclass(frozen=True)
class PulseOutcome:
    """What the instrument measured, plus the true effect on the chamber's cells."""

    field_v_per_cm: float
    peak_current_a: float
    pulses_delivered: int
    delivery_fraction: float  # true: share of surviving cells that took up the cargo
    survival_fraction: float  # true: share of viable cells that survived the pulses
    fault: str = ""


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def _dose_factor(pulse_width_us: float, pulse_count: int, p: ElectroporatorParams) -> float:
    dose = max(pulse_width_us, 1e-3) * max(pulse_count, 1)
    return (p.reference_pulse_us / dose) ** p.strength_duration_exponent


def delivery_efficiency(
    field_v_per_cm: float, pulse_width_us: float, pulse_count: int, p: ElectroporatorParams
) -> float:
    """Fraction of surviving cells that receive the cargo."""
    e50 = p.critical_tmp_v / (1.5 * p.cell_radius_um * 1e-4)  # V/cm
    e50 *= _dose_factor(pulse_width_us, pulse_count, p)
    return p.delivery_max * _sigmoid((field_v_per_cm - e50) / p.delivery_slope_v_per_cm)


def pulse_survival(
    field_v_per_cm: float, pulse_width_us: float, pulse_count: int, p: ElectroporatorParams
) -> float:
    """Fraction of viable cells still viable after the pulses."""
    e50 = p.kill_e50_v_per_cm * _dose_factor(pulse_width_us, pulse_count, p)
    return 1.0 - _sigmoid((field_v_per_cm - e50) / p.kill_slope_v_per_cm)


class ElectroporatorModel:
    """The chamber and pulse generator; ``armed`` is the server's interlock flag to keep."""

    def __init__(
        self,
        params: ElectroporatorParams | None = None,
        *,
        bag: BioreactorModel | None = None,
        seed: int = 0,
    ) -> None:
        self.params = params or ElectroporatorParams()
        self.bag = bag
        self.armed: bool = False
        self.fault: str = ""
        self.programmed: PulseProgram | None = None
        self.chamber = CellSuspension(0.0, 0.0, 0.0, 0.0)
        #: Pulsed portions wait here (the output line's recovery bag) until ``recover``
        #: returns them all to the culture: no portion is drawn, or pulsed, twice.
        self.recovery = CellSuspension(0.0, 0.0, 0.0, 0.0)
        self.last_outcome: PulseOutcome | None = None
        self._current_rng = sensor_rng(seed, "electroporator/current")

    @property
    def loaded_ul(self) -> float:
        """Suspension volume in the chamber (µL)."""
        return self.chamber.volume_ml * 1000.0

    def load(self, volume_ul: float) -> None:
        """Draw suspension from the bag into the chamber (cells move with it)."""
        if volume_ul < 0.0 or not math.isfinite(volume_ul):
            raise ValueError(f"load volume must be >= 0 µL, got {volume_ul}")
        if self.bag is None:
            raise ValueError("no bag is connected to the electroporator")
        room_ul = max(0.0, self.params.chamber_max_ul - self.loaded_ul)
        drawn = self.bag.withdraw(min(volume_ul, room_ul) / 1000.0)
        self.chamber = _merged(self.chamber, drawn)

    def program(
        self, voltage_v: float, pulse_width_us: float, pulse_count: int, gap_mm: float
    ) -> None:
        """Store the pulse program the next ``pulse`` fires."""
        if gap_mm <= 0.0 or pulse_width_us <= 0.0 or pulse_count < 1 or voltage_v < 0.0:
            raise ValueError("program needs voltage >= 0, width > 0, count >= 1, gap > 0")
        self.programmed = PulseProgram(voltage_v, pulse_width_us, int(pulse_count), gap_mm)

    def pulse(self) -> PulseOutcome:
        """Fire the programmed pulses and apply delivery and killing to the chamber's cells."""
        prog = self.programmed
        if prog is None:
            raise ValueError("no pulse program set")
        p, c = self.params, self.chamber
        gap_m = prog.gap_mm * 1e-3
        field = prog.voltage_v / (gap_m * 100.0)  # V/cm
        current = prog.voltage_v * p.buffer_conductivity_s_per_m * c.volume_ml * 1e-6 / gap_m**2
        fault = ""
        if c.volume_ml <= 0.0:
            fault = "no sample"
        elif current > p.max_current_a:
            fault = "overcurrent"
        if fault:
            tripped_at = 0.0 if fault == "no sample" else p.max_current_a
            outcome = PulseOutcome(field, tripped_at, 0, 0.0, 1.0, fault)
        else:
            delivery = delivery_efficiency(field, prog.pulse_width_us, prog.pulse_count, p)
            survival = pulse_survival(field, prog.pulse_width_us, prog.pulse_count, p)
            survivors = c.viable_cells * survival
            # delivery is transient; a share of the delivered cells integrates the cargo
            transient = c.transient_fraction + (1.0 - c.transient_fraction) * delivery
            stable = c.transduced_fraction + (1.0 - c.transduced_fraction) * delivery * (
                p.stable_integration
            )
            self.chamber = CellSuspension(
                c.volume_ml,
                survivors,
                c.dead_cells + c.viable_cells - survivors,
                stable,
                c.vector_copies,
                transient,
            )
            measured = current * (1.0 + self._current_rng.gauss(0.0, p.current_noise_rel))
            outcome = PulseOutcome(field, round(measured, 2), prog.pulse_count, delivery, survival)
        self.fault = fault
        self.last_outcome = outcome
        return outcome

    def unload(self) -> None:
        """Empty the chamber into the recovery bag (not back into the culture)."""
        if self.chamber.volume_ml > 0.0:
            self.recovery = _merged(self.recovery, self.chamber)
        self.chamber = CellSuspension(0.0, 0.0, 0.0, 0.0)

    @property
    def recovery_ml(self) -> float:
        """Suspension waiting in the recovery bag (mL)."""
        return self.recovery.volume_ml

    def recover(self) -> float:
        """Return the recovery bag's cells to the culture bag; the volume returned (mL)."""
        if self.bag is None:
            raise ValueError("no bag is connected to the electroporator")
        returned = self.recovery.volume_ml
        if returned > 0.0:
            self.bag.receive(self.recovery)
        self.recovery = CellSuspension(0.0, 0.0, 0.0, 0.0)
        return returned


def _merged(a: CellSuspension, b: CellSuspension) -> CellSuspension:
    """Two suspensions pooled: fractions weighted by their viable cells."""
    viable = a.viable_cells + b.viable_cells

    def mean(x: float, y: float) -> float:
        return (x * a.viable_cells + y * b.viable_cells) / viable if viable > 0.0 else 0.0

    return CellSuspension(
        a.volume_ml + b.volume_ml,
        viable,
        a.dead_cells + b.dead_cells,
        mean(a.transduced_fraction, b.transduced_fraction),
        mean(a.vector_copies, b.vector_copies),
        mean(a.transient_fraction, b.transient_fraction),
    )
