"""Process faults inside the plant: a sensor that sticks or drifts, a dead heater, an empty
gas cylinder, a contaminated culture.

They act where the real fault acts. A stuck or drifting sensor changes only what
the instrument reports (``observe``), never the true state, so the controller
that trusts it drives the true state wrong, as on a real bench. A failed heater
stops heating; an empty cylinder stops the flow whatever the valve does; a
contamination is a second, bacterial population growing in the bag. Device
servers show the consequences on the wire (flags, alarms, values) and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from twin.sim.params import BioreactorParams

__all__ = ["BIOREACTOR_SENSORS", "SensorFault", "contamination_rates"]

BIOREACTOR_SENSORS = ("temperature", "do", "ph", "volume", "vcd")
"""Sensors of the bag a fault can act on (the process values of the register map)."""


@dataclass
class SensorFault:
    """What is wrong with one sensor: stuck at a value, drifting at a rate from ``t0``, or
    failed (it reports no number: NaN, as a controller shows a broken probe in a float
    register)."""

    kind: str  # "stuck" | "drift" | "failed"
    t0: float  # plant time (s) the fault began
    value: float | None = None  # stuck: the frozen reading (None: the first reading after t0)
    rate_per_h: float = 0.0  # drift: reading units per hour

    def apply(self, reading: float, t: float) -> float:
        """The reading the faulty instrument shows instead of ``reading`` at plant time ``t``."""
        if self.kind == "failed":
            return math.nan
        if self.kind == "stuck":
            if self.value is None:
                self.value = reading
            return self.value
        return reading + self.rate_per_h * max(0.0, t - self.t0) / 3600.0


def contamination_rates(
    contaminants_per_ml: float, glucose_mm: float, do_um: float, p: BioreactorParams
) -> tuple[float, float, float, float]:
    """Bacterial growth (1/h) and its pull on the culture at one density.

    Returns (growth rate, glucose uptake coefficient k_glc [1/h], O2 uptake
    coefficient k_o2 [1/h], extra T-cell death rate [1/h]). Uptakes are
    linearised like the T cells' (rate = k*concentration), so the bag model
    integrates both populations the same way.
    """
    b = contaminants_per_ml
    crowding = max(0.0, 1.0 - b / p.contaminant_max_per_ml)
    f_glc = glucose_mm / (p.contaminant_glucose_ks_mm + glucose_mm) if glucose_mm > 0 else 0.0
    mu = p.contaminant_mu_max_per_h * crowding * f_glc
    k_glc = p.contaminant_qglc * b * 1e-9 / (p.contaminant_glucose_ks_mm + glucose_mm)
    k_o2 = p.contaminant_qo2 * b * 1e-6 / (p.do_ks_um + do_um)
    kill = p.contaminant_kill_per_h * b / (p.contaminant_kill_half_per_ml + b)
    return mu, k_glc, k_o2, kill
