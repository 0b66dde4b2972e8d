"""T-cell growth and death rates (1/h) as functions of the culture's conditions.

mu = mu_max*activated*S/(Ks+S)*I(lactate)*f(DO)*f(pH)*f(T)*f(IL-2) (TWIN_MODELS.md);
death accelerates when glucose runs out, lactate builds up and pH falls, calibrated
to the harvest-hold figures (58%/41% viable recovery after 3 h/6 h at 250e6/mL).
"""

from __future__ import annotations

import math

from twin.sim.params import BioreactorParams

__all__ = ["death_rate", "growth_rate", "temperature_factor"]


def temperature_factor(temperature_c: float, p: BioreactorParams) -> float:
    """Metabolic slow-down below 37 °C (Q10); growth stops by 41 °C."""
    if temperature_c <= 37.0:
        return p.q10 ** ((temperature_c - 37.0) / 10.0)
    return max(0.0, 1.0 - (temperature_c - 37.0) / 4.0)


def growth_rate(
    activated: float,
    glucose_mm: float,
    lactate_mm: float,
    do_um: float,
    ph: float,
    f_temp: float,
    il2_u_per_ml: float,
    p: BioreactorParams,
) -> float:
    """Specific growth rate (1/h): only activated cells divide."""
    if activated <= 0.0 or glucose_mm <= 0.0:
        return 0.0
    f_s = glucose_mm / (p.glucose_ks_mm + glucose_mm)
    r = lactate_mm / p.lactate_ki_mm
    f_l = 1.0 / (1.0 + r * r)
    do_pct = 100.0 * do_um / p.do_sat_air_um
    hyper = (do_pct - 30.0) / 70.0  # min(1.0, max(0.0, ...)) as conditionals (every step)
    hyper = hyper if hyper > 0.0 else 0.0
    hyper = hyper if hyper < 1.0 else 1.0
    f_do = do_um / (p.do_ks_um + do_um) * (1.0 - p.hyperoxia_penalty * hyper)
    lo, hi = p.ph_optimum
    if ph < lo:
        f_ph = math.exp(-(((lo - ph) / p.ph_width) ** 2))
    elif ph > hi:
        f_ph = math.exp(-(((ph - hi) / p.ph_width) ** 2))
    else:
        f_ph = 1.0
    f_il2 = p.il2_floor + (1.0 - p.il2_floor) * il2_u_per_ml / (p.il2_k_u_per_ml + il2_u_per_ml)
    return p.mu_max_per_h * activated * f_s * f_l * f_do * f_ph * f_temp * f_il2


def death_rate(glucose_mm: float, lactate_mm: float, ph: float, p: BioreactorParams) -> float:
    """Specific death rate (1/h): a baseline plus starvation, acid and lactate terms."""
    ks2 = p.starvation_ks_mm * p.starvation_ks_mm
    starve = p.kd_starvation_per_h * ks2 / (ks2 + glucose_mm * glucose_mm)
    z = (ph - p.acid_ph50) / p.acid_ph_width
    z = z if z < 50.0 else 50.0  # min(50.0, z), as a conditional (every step)
    acid = p.kd_acid_per_h / (1.0 + math.exp(z))
    excess = lactate_mm - p.lactate_toxic_mm
    lac = p.kd_lactate_per_h_mm * (excess if excess > 0.0 else 0.0)
    return p.kd_base_per_h + starve + acid + lac
