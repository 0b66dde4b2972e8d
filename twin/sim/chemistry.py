"""Gas-liquid and acid-base relations shared by the bioreactor model (pure functions).

pH follows Henderson-Hasselbalch on bicarbonate (TWIN_MODELS.md) with one lumped
non-bicarbonate buffer, so a lactate load lowers pH gradually instead of driving
bicarbonate, and the logarithm, to zero. The conserved quantity is alkalinity:
bicarbonate plus buffer base. Lactic acid consumes it, sodium bicarbonate (BASE)
restores it, fresh medium washes it back towards the medium's value.
"""

from __future__ import annotations

import math

from twin.equipment import Gas
from twin.sim.params import BioreactorParams

__all__ = [
    "alkalinity_at",
    "inlet_fractions",
    "kla_per_h",
    "medium_alkalinity",
    "pco2_mmhg",
    "solve_ph",
]

_LN10 = math.log(10.0)


def inlet_fractions(flows: dict[Gas, float], p: BioreactorParams) -> tuple[float, float]:
    """O2 and CO2 mole fractions of the inlet gas; headspace air when nothing flows.

    y_O2 = (0.20946*F_air + F_O2)/sum(F) (TWIN_MODELS.md), and likewise for CO2.
    """
    air = flows.get(Gas.AIR, 0.0)
    total = air + flows.get(Gas.O2, 0.0) + flows.get(Gas.N2, 0.0) + flows.get(Gas.CO2, 0.0)
    if total <= 1e-6:
        return p.air_o2_fraction, p.air_co2_fraction
    y_o2 = (p.air_o2_fraction * air + flows.get(Gas.O2, 0.0)) / total
    y_co2 = (p.air_co2_fraction * air + flows.get(Gas.CO2, 0.0)) / total
    return y_o2, y_co2


def kla_per_h(rpm: float, p: BioreactorParams) -> float:
    """Oxygen kLa of a rocking bag: linear up to 20 rpm, log-linear from 20 to 40 rpm (Bai 2019)."""
    if rpm <= 0.0:
        return p.kla_still_per_h
    if rpm <= 20.0:
        return p.kla_still_per_h + (p.kla_20rpm_per_h - p.kla_still_per_h) * rpm / 20.0
    frac = min(rpm, 40.0) / 20.0 - 1.0
    return p.kla_20rpm_per_h * (p.kla_40rpm_per_h / p.kla_20rpm_per_h) ** frac


def pco2_mmhg(co2_fraction: float, p: BioreactorParams) -> float:
    """Partial pressure of CO2 over a 37 °C liquid for a dry-gas CO2 fraction."""
    return co2_fraction * (p.atm_mmhg - p.water_vapour_mmhg)


def alkalinity_at(ph: float, pco2: float, p: BioreactorParams) -> float:
    """Bicarbonate plus buffer base (mM) that gives ``ph`` at ``pco2``."""
    hco3 = p.co2_solubility_mm_per_mmhg * pco2 * 10.0 ** (ph - p.pk_bicarbonate)
    return hco3 + p.medium_buffer_mm / (1.0 + 10.0 ** (p.medium_buffer_pka - ph))


def medium_alkalinity(p: BioreactorParams) -> float:
    """Alkalinity of fresh medium: its bicarbonate at the CO2 level it was formulated for."""
    pco2 = pco2_mmhg(p.medium_reference_co2_fraction, p)
    ph = p.pk_bicarbonate + math.log10(
        p.medium_bicarbonate_mm / (p.co2_solubility_mm_per_mmhg * pco2)
    )
    return alkalinity_at(ph, pco2, p)


def solve_ph(alkalinity: float, pco2: float, guess: float, p: BioreactorParams) -> float:
    """pH at which bicarbonate + buffer base equals ``alkalinity`` (Newton, clamped 4.5-9)."""
    k_hco3 = p.co2_solubility_mm_per_mmhg * max(pco2, 1e-3) * 10.0 ** (-p.pk_bicarbonate)
    buffer, pka = p.medium_buffer_mm, p.medium_buffer_pka
    # The clamps are written as conditionals, not min/max calls: the same values (min(a, b)
    # is b only if b < a), at a fraction of the cost, for a solve every plant step.
    ph = guess if guess > 4.5 else 4.5
    ph = ph if ph < 9.0 else 9.0
    for _ in range(30):
        hco3 = k_hco3 * 10.0**ph
        x = 10.0 ** (pka - ph)
        f = hco3 + buffer / (1.0 + x) - alkalinity
        slope = _LN10 * (hco3 + buffer * x / ((1.0 + x) * (1.0 + x)))
        step = f / slope
        limited = step if step < 0.5 else 0.5
        limited = limited if limited > -0.5 else -0.5
        ph = ph - limited
        ph = ph if ph > 4.5 else 4.5
        ph = ph if ph < 9.0 else 9.0
        if abs(step) < 1e-9:
            break
    return ph
