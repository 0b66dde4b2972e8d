"""Control modules: a PID loop with anti-windup and bumpless transfer, and the DO cascade.

The DO loop is a cascade across devices: the bioreactor's DO process value sets
the gas dispenser's O2 and N2 mass-flow setpoints (O2 raises DO above what air
gives; N2 strips it below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PID", "DOCascade", "GasSplit", "PHControl"]


@dataclass
class PID:
    """Positional PI(D) with output clamping and conditional integration (anti-windup).

    Gains are in output units per PV unit; ``ti_s``/``td_s`` in seconds.
    ``track(output)`` makes a later switch to automatic bumpless.
    """

    kp: float
    ti_s: float
    td_s: float = 0.0
    out_min: float = -1.0
    out_max: float = 1.0
    integral: float = 0.0
    _last_error: float | None = None

    def track(self, output: float) -> None:
        """Bumpless transfer: align the integral so the next output equals ``output``."""
        self.integral = min(max(output, self.out_min), self.out_max)
        self._last_error = None

    def update(self, setpoint: float, pv: float, dt_s: float) -> float:
        """One loop execution; returns the clamped output."""
        error = setpoint - pv
        derivative = 0.0
        if self.td_s and self._last_error is not None and dt_s > 0:
            derivative = self.kp * self.td_s * (error - self._last_error) / dt_s
        self._last_error = error
        proposed = self.integral + (self.kp * dt_s / self.ti_s) * error if self.ti_s else 0.0
        unclamped = self.kp * error + proposed + derivative
        # Integrate only while the output is not saturated in the direction of the error.
        if (unclamped > self.out_max and error > 0) or (unclamped < self.out_min and error < 0):
            proposed = self.integral
        self.integral = min(max(proposed, self.out_min), self.out_max)
        return min(max(self.kp * error + self.integral + derivative, self.out_min), self.out_max)


@dataclass(frozen=True)
class GasSplit:
    """The O2 and N2 flows (sccm) one DO controller output asks for."""

    o2_sccm: float
    n2_sccm: float

    def differs(self, other: GasSplit, deadband_sccm: float) -> bool:
        """Whether this split is far enough from ``other`` to be worth writing."""
        return (
            abs(self.o2_sccm - other.o2_sccm) >= deadband_sccm
            or abs(self.n2_sccm - other.n2_sccm) >= deadband_sccm
            or (self.o2_sccm == 0.0) != (other.o2_sccm == 0.0)
            or (self.n2_sccm == 0.0) != (other.n2_sccm == 0.0)
        )


@dataclass
class DOCascade:
    """DO (% air saturation) -> O2/N2 flows. Output > 0 adds O2, < 0 adds N2.

    The DO process value passes a first-order PV filter before the PI, as a DCS analog
    input block's filter does: unfiltered, the probe's noise (~0.3 % air saturation) times
    Kp moved the N2 line by 1-2 sccm every minute, inside the mass-flow controller's own
    accuracy (Alicat: +-0.8 % of reading +-0.2 % of full scale, +-2.1 sccm at 143 of 500
    sccm), and every such move was a device write and a committed batch-record entry.
    """

    o2_max_sccm: float
    n2_max_sccm: float
    pid: PID
    #: PV filter time constant (s); 0 passes the raw reading.
    pv_filter_s: float = 0.0
    #: The filtered DO (% air saturation) the PI last acted on.
    filtered_pct: float | None = None

    @classmethod
    def default(cls, o2_max_sccm: float, n2_max_sccm: float) -> DOCascade:
        # Lambda tuning on a rocking bag: DO time constant ~10 min (kLa 3.5-10 1/h), process
        # gain ~60 % air sat. per unit output, closed-loop lambda 30 min -> Kp 0.006, Ti 900 s.
        # PV filter 5 min: a sixth of lambda, so the loop's response barely changes, while
        # the noise reaching the flow setpoints falls to about a third.
        return cls(o2_max_sccm, n2_max_sccm, PID(kp=0.006, ti_s=900.0), pv_filter_s=300.0)

    def filter(self, do_pct: float, dt_s: float) -> float:
        """The filtered DO: exact first-order lag over ``dt_s``, starting at the first reading."""
        last = self.filtered_pct
        if last is None or self.pv_filter_s <= 0.0:
            self.filtered_pct = do_pct
        else:
            self.filtered_pct = last + (1.0 - math.exp(-dt_s / self.pv_filter_s)) * (do_pct - last)
        return self.filtered_pct

    def update(self, setpoint_pct: float, do_pct: float, dt_s: float) -> GasSplit:
        u = self.pid.update(setpoint_pct, self.filter(do_pct, dt_s), dt_s)
        if u >= 0:
            return GasSplit(o2_sccm=round(u * self.o2_max_sccm, 2), n2_sccm=0.0)
        return GasSplit(o2_sccm=0.0, n2_sccm=round(-u * self.n2_max_sccm, 2))


@dataclass
class PHControl:
    """pH by CO2 in the inlet gas (reverse acting: pH above setpoint -> more CO2), base as backup.

    Lambda tuning on the bicarbonate buffer: ~-0.03 pH per sccm CO2 around 5 % of 200 sccm,
    CO2 equilibration ~10 min, closed-loop lambda 30 min -> Kc ~11 sccm per pH unit, Ti 600 s.
    """

    pid: PID
    co2_max_sccm: float

    @classmethod
    def default(cls, co2_now_sccm: float, co2_max_sccm: float) -> PHControl:
        pid = PID(kp=11.0, ti_s=600.0, out_min=0.0, out_max=co2_max_sccm)
        pid.track(co2_now_sccm)  # bumpless: start from the flow the bag already gets
        return cls(pid, co2_max_sccm)

    def update(self, setpoint: float, ph: float, dt_s: float) -> float:
        """The CO2 flow (sccm) for this pH reading."""
        return round(self.pid.update(ph, setpoint, dt_s), 2)
